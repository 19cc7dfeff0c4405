# ctest fixture: installs the reference tokenizers (npm ci, pinned by package-lock.json) into
# DST, trains SentencePiece Unigram tokenizers (make_sentencepiece.py) and writes
# DST/out/expected.json with make_expected.js. Fails loudly: parity tests must
# not silently skip in CI.
if(NOT NODE OR NOT NPM)
  message(FATAL_ERROR "node and npm are required for the tokenizer parity tests "
                      "(scripts/install-deps.sh installs them)")
endif()
file(MAKE_DIRECTORY ${DST})
foreach(f package.json package-lock.json make_expected.js brown_text.js bench_hf.js
          make_sentencepiece.py)
  configure_file(${SRC}/${f} ${DST}/${f} COPYONLY)
endforeach()
# (Re)install when the lock file changed since the last install.
file(SHA256 ${DST}/package-lock.json lock_hash)
set(stamp ${DST}/node_modules/.hfrun-lock-sha256)
set(installed_hash "")
if(EXISTS ${stamp})
  file(READ ${stamp} installed_hash)
endif()
if(NOT installed_hash STREQUAL lock_hash)
  execute_process(COMMAND ${NPM} ci --no-audit --no-fund --loglevel=error
                  WORKING_DIRECTORY ${DST} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "npm ci failed in ${DST} (rc ${rc})")
  endif()
  file(WRITE ${stamp} ${lock_hash})
endif()
# Unigram tokenizers trained by SentencePiece itself (real precompiled charsmaps).
execute_process(COMMAND ${NODE} brown_text.js ${DST}/brown_300k.txt 300000
                WORKING_DIRECTORY ${DST} RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "brown_text.js failed (rc ${rc})")
endif()
execute_process(COMMAND ${PYTHON} make_sentencepiece.py ${DST}/brown_300k.txt ${DST}/out
                WORKING_DIRECTORY ${DST} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "make_sentencepiece.py failed (rc ${rc}); scripts/install-deps.sh installs "
                      "python3-sentencepiece")
endif()
execute_process(COMMAND ${NODE} make_expected.js ${TEXTS} ${DST}/out
                WORKING_DIRECTORY ${DST} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "make_expected.js failed (rc ${rc})")
endif()
