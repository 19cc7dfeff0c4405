# ctest fixture: installs the reference tokenizers (npm ci, pinned by package-lock.json) into
# DST and writes DST/out/expected.json with make_expected.js. Fails loudly: parity tests must
# not silently skip in CI.
if(NOT NODE OR NOT NPM)
  message(FATAL_ERROR "node and npm are required for the tokenizer parity tests "
                      "(scripts/install-deps.sh installs them)")
endif()
file(MAKE_DIRECTORY ${DST})
foreach(f package.json package-lock.json make_expected.js)
  configure_file(${SRC}/${f} ${DST}/${f} COPYONLY)
endforeach()
if(NOT EXISTS ${DST}/node_modules/tokenizers/package.json)
  execute_process(COMMAND ${NPM} ci --no-audit --no-fund --loglevel=error
                  WORKING_DIRECTORY ${DST} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "npm ci failed in ${DST} (rc ${rc})")
  endif()
endif()
execute_process(COMMAND ${NODE} make_expected.js ${TEXTS} ${DST}/out
                WORKING_DIRECTORY ${DST} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "make_expected.js failed (rc ${rc})")
endif()
