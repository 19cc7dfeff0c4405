#!/usr/bin/env bash
# End-to-end checks of the hfrun executable: exit codes, --version, env, bench JSON output.
# Usage: test_cli.sh PATH/TO/hfrun GPT2_TOKENIZER_JSON
set -uo pipefail
HFRUN="$1"
GPT2="$2"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0

# shellcheck source=../lib/checks.sh
source "$(dirname "$0")/../lib/checks.sh"

check "version" 0 "$HFRUN" --version
contains "version" '^hfrun [0-9]+\.[0-9]+\.[0-9]+$'
check "help" 0 "$HFRUN" --help
contains "help" 'bench matmul'
# Grouped as users think of the commands, each with an example.
for group in "^Train$" "^Prepare data$" "^Inspect and use a model$" "^Benchmark"; do
  contains "help groups" "$group"
done
contains "help examples" "^      hfrun prepare --tokenizer tok.json --output data/shards"
check "no args is usage error" 2 "$HFRUN"
check "unknown command" 2 "$HFRUN" frobnicate
contains "unknown command" "unknown command 'frobnicate'"
check "env" 0 "$HFRUN" env
[ "$("$HFRUN" env | tr -d '\0' | wc -c)" -eq "$("$HFRUN" env | wc -c)" ] && pass=$((pass + 1)) ||
  { fail=$((fail + 1)); echo "FAIL: hfrun env prints a NUL byte"; }
contains "env" 'onednn: +[0-9]+\.[0-9]+'
contains "env" 'cpu isa: +[a-z0-9_]+'
check "bench matmul f32" 0 "$HFRUN" bench matmul --m 64 --n 48 --k 32 --dtype f32 --baseline --min-seconds 0.05
contains "bench matmul f32" '^\{.*"gflops": ?[0-9.]+.*"baseline_gflops": ?[0-9.]+.*\}$'
check "bench matmul bf16" 0 "$HFRUN" bench matmul --m 64 --n 64 --k 64 --dtype bf16 --min-seconds 0.05
contains "bench matmul bf16" '"dtype": ?"bf16"'
check "bench matmul bad dtype" 2 "$HFRUN" bench matmul --dtype f64
contains "bench matmul bad dtype" "f64"
check "bench matmul bad size" 2 "$HFRUN" bench matmul --m 0
check "bench attention" 0 "$HFRUN" bench attention --batch 2 --heads 4 --kv-heads 2 --seq 150 --head-dim 16 --window 40 --dtype f32 --min-seconds 0.02
contains "bench attention" '^\{.*"fused_ms": ?[0-9.]+.*"composed_ms": ?[0-9.]+.*"speedup".*\}$'
check "bench attention bad heads" 2 "$HFRUN" bench attention --heads 3 --kv-heads 2
contains "bench attention bad heads" "kv-heads"
check "bench matmul transposed b" 0 "$HFRUN" bench matmul --m 40 --n 24 --k 32 --layout nt --baseline --min-seconds 0.05
contains "bench matmul transposed b" '"layout": ?"nt".*"baseline_gflops"'
check "bench matmul bad layout" 2 "$HFRUN" bench matmul --layout tx
contains "bench matmul bad layout" "nn, nt, tn or tt"
check "bench matmul unknown option" 2 "$HFRUN" bench matmul --mm 3
check "bench matmul help" 0 "$HFRUN" bench matmul --help
check "bench block" 0 "$HFRUN" bench block --batch 1 --seq 16 --dim 64 --heads 4 --iters 2
contains "bench block" '"outside_matmul_fraction": ?[0-9.]+'
check "bench block bad heads" 2 "$HFRUN" bench block --dim 64 --heads 5
check "bench unknown" 2 "$HFRUN" bench nothing

# tokenize / decode with the real GPT-2 tokenizer (ids as Hugging Face gives them).
printf 'Hello world!\n<|endoftext|> caf\xc3\xa9\n' > "$TMP/in.txt"
check "tokenize" 0 "$HFRUN" tokenize --tokenizer "$GPT2" "$TMP/in.txt"
contains "tokenize" '^\[15496,995,0\]$'
contains "tokenize" '^\[50256,40304\]$'
check "tokenize stdin" 0 sh -c "printf 'Hello world!' | '$HFRUN' tokenize --tokenizer '$GPT2'"
contains "tokenize stdin" '^\[15496,995,0\]$'
check "tokenize whole" 0 "$HFRUN" tokenize --tokenizer "$GPT2" --whole "$TMP/in.txt"
contains "tokenize whole" '^\[15496,995,0,198,50256,40304,198\]$'
printf '[15496,995,0]\n[50256, 40304]\n' > "$TMP/ids.txt"
check "decode" 0 "$HFRUN" tokenize --tokenizer "$GPT2" --decode "$TMP/ids.txt"
contains "decode" '^Hello world!$'
contains "decode" '^<\|endoftext\|> caf'
printf '[1, x]\n' > "$TMP/bad_ids.txt"
check "decode bad line" 2 "$HFRUN" tokenize --tokenizer "$GPT2" --decode "$TMP/bad_ids.txt"
contains "decode bad line" 'bad_ids.txt:1'
printf 'ok\nbad \xff\n' > "$TMP/bad_utf8.txt"
check "tokenize invalid utf8" 2 "$HFRUN" tokenize --tokenizer "$GPT2" "$TMP/bad_utf8.txt"
contains "tokenize invalid utf8" 'bad_utf8.txt:2.*UTF-8'
check "tokenize missing tokenizer" 2 "$HFRUN" tokenize --tokenizer "$TMP/nope.json" "$TMP/in.txt"
contains "tokenize missing tokenizer" 'nope.json'
check "tokenize missing input" 2 "$HFRUN" tokenize --tokenizer "$GPT2" "$TMP/nope.txt"
# Pairs through a BERT-style WordPiece tokenizer (the parity fixture builds it): [CLS] a [SEP] b
# [SEP] with [CLS] = 2 and [SEP] = 3; a line without its tab is named.
REF_OUT="$(cd "$(dirname "$GPT2")/../../../.." && pwd)/out"
printf 'Hello world\tSecond one!\n' > "$TMP/pairs.tsv"
check "tokenize pairs" 0 "$HFRUN" tokenize --tokenizer "$REF_OUT/bert_uncased.tokenizer.json" \
  --pairs --add-special "$TMP/pairs.tsv"
contains "tokenize pairs" '^\[2,[0-9,]+,3,[0-9,]+,3\]$'
printf 'ok\tfine\nno tab here\n' > "$TMP/bad_pairs.tsv"
check "tokenize pairs without tab" 2 "$HFRUN" tokenize --tokenizer "$REF_OUT/bert_uncased.tokenizer.json" \
  --pairs "$TMP/bad_pairs.tsv"
contains "tokenize pairs without tab" 'bad_pairs.tsv:2.*tab'
# SentencePiece-style BPE (Llama-2 layout: byte fallback, Replace/ByteFallback/Fuse/Strip decoder).
LLAMA2="$(dirname "$GPT2")/../../tokenizer-llama2/models/tokenizer.json"
printf 'Hello world 🙂\n' > "$TMP/sp.txt"
check "tokenize llama2" 0 "$HFRUN" tokenize --tokenizer "$LLAMA2" --add-special "$TMP/sp.txt"
"$HFRUN" tokenize --tokenizer "$LLAMA2" --add-special "$TMP/sp.txt" > "$TMP/sp_ids.txt"
check "decode llama2" 0 "$HFRUN" tokenize --tokenizer "$LLAMA2" --decode --skip-special "$TMP/sp_ids.txt"
contains "decode llama2" '^Hello world 🙂$'
echo '{"model": {"type": "WordLevel", "vocab": {}}}' > "$TMP/wp.json"
check "tokenize unsupported model" 2 "$HFRUN" tokenize --tokenizer "$TMP/wp.json" "$TMP/in.txt"
contains "tokenize unsupported model" 'WordLevel'

# prepare: shards, summary, and errors with file:line.
printf '{"text": "one"}\n{"text": "two"}\n' > "$TMP/docs.jsonl"
check "prepare" 0 "$HFRUN" prepare --tokenizer "$GPT2" --output "$TMP/shards" "$TMP/in.txt" "$TMP/docs.jsonl"
contains "prepare" '^prepared 3 documents, [0-9]+ tokens .* 1 shard\(s\) of uint16'
[ -f "$TMP/shards/shard_000000.bin" ] && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL: no shard written"; }
check "prepare again needs overwrite" 2 "$HFRUN" prepare --tokenizer "$GPT2" --output "$TMP/shards" "$TMP/in.txt"
contains "prepare again needs overwrite" 'overwrite'
printf '{"text": "ok"}\nnot json\n' > "$TMP/bad.jsonl"
check "prepare bad jsonl" 2 "$HFRUN" prepare --tokenizer "$GPT2" --output "$TMP/s2" "$TMP/bad.jsonl"
contains "prepare bad jsonl" 'bad.jsonl:2'
check "prepare no inputs" 2 "$HFRUN" prepare --tokenizer "$GPT2" --output "$TMP/s3"

# Token shards train without a tokenizer (model.config.vocab_size given); text, or no
# vocab_size, is refused naming what is missing.
for i in $(seq 40); do echo "Shards are tokens already: line $i of the corpus."; done > "$TMP/sh.txt"
"$HFRUN" prepare --tokenizer "$GPT2" --output "$TMP/sh_shards" "$TMP/sh.txt" > /dev/null
shard_yaml() {  # shard_yaml OUT EXTRA_DATA MODEL_CONFIG
  printf 'output_dir: %s\nmodel: {config: {n_layer: 1, n_head: 2, n_embd: 16, n_positions: 32%s}}\n' "$1" "$3"
  printf 'data: {train: [%s], seq_len: 16}\ntrain: {micro_batch_size: 2, max_steps: 2}\n' "$2"
}
shard_yaml "$TMP/sh_run" "$TMP/sh_shards" ", vocab_size: 50257" > "$TMP/sh.yaml"
# One run per output_dir: while another process holds its lock (here the test, as a run would),
# a second run is refused naming the holder; once it is released the run goes ahead.
mkdir -p "$TMP/sh_run"
exec 9> "$TMP/sh_run/.hfrun.lock"
flock -n 9 && echo "host testhost, pid 4242" >&9
check "output_dir in use refused" 2 "$HFRUN" train "$TMP/sh.yaml"
contains "output_dir in use refused" "output_dir .*sh_run is in use by another run \(host testhost, pid 4242\)"
exec 9>&-
check "shards train without a tokenizer" 0 "$HFRUN" train "$TMP/sh.yaml"
[ -f "$TMP/sh_run/final/model.safetensors" ] && ! [ -e "$TMP/sh_run/final/tokenizer.json" ] &&
  pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL: a shard-only run's final/ is not a model without tokenizer.json"; }
# The end-of-run summary: printed, and output_dir/summary.json with the same run's numbers.
contains "run summary printed" "trained 2 steps in .*tokens/s, MFU [0-9.]+"
contains "run summary time split" "time: compute [0-9]+% .*communication wait .*data .*checkpoints .*export"
if /usr/bin/python3 - "$TMP/sh_run/summary.json" "$TMP/sh_run/metrics.jsonl" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
last = [json.loads(l) for l in open(sys.argv[2]) if '"loss"' in l][-1]
assert s["steps"] == 2 and s["steps_this_run"] == 2 and s["tokens"] == 2 * 2 * 16, s
assert abs(s["last_loss"] - last["loss"]) < 1e-5, (s, last)
assert 0 < s["mfu"] < 2 and s["achieved_gflops"] > 0 and s["wall_s"] > 0, s
parts = s["time_s"]
assert set(parts) == {"compute", "communication_wait", "data_loading", "evaluation",
                      "checkpointing", "export", "other"}, parts
assert abs(sum(parts.values()) - s["wall_s"]) < 1e-3 * s["wall_s"] + 1e-6, (parts, s["wall_s"])
assert s["checkpoints_saved"] == 1 and s["last_checkpoint"].endswith("step-00000002"), s
assert s["world"] == 1 and len(s["peak_mem_mb"]) == 1 and s["peak_mem_mb"][0] > 10, s
assert s["final_dir"].endswith("sh_run/final") and s["stopped_by_signal"] is False, s
EOF
then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: summary.json"; cat "$TMP/sh_run/summary.json"; fi
shard_yaml "$TMP/sh_run2" "$TMP/sh_shards" "" > "$TMP/sh2.yaml"
check "shards without tokenizer need vocab_size" 2 "$HFRUN" train "$TMP/sh2.yaml"
contains "shards without tokenizer need vocab_size" "model.config.vocab_size is required without a tokenizer"
shard_yaml "$TMP/sh_run3" "$TMP/sh_shards, $TMP/sh.txt" ", vocab_size: 50257" > "$TMP/sh3.yaml"
check "text without tokenizer refused" 2 "$HFRUN" train "$TMP/sh3.yaml"
contains "text without tokenizer refused" "sh.txt is text: tokenizing it needs a tokenizer"
# bench train: one JSON line with the step time and MFU against this CPU's GEMM peak, in every
# precision (bf16 too where oneDNN has no bf16 matmul: its peak is then the f32 one, named).
for prec in no bf16 fp16; do
  shard_yaml "$TMP/bench_$prec" "$TMP/sh_shards" ", vocab_size: 50257" > "$TMP/bench_$prec.yaml"
  check "bench train $prec" 0 "$HFRUN" bench train "$TMP/bench_$prec.yaml" --steps 1 --warmup 1 \
    --set train.mixed_precision=$prec
  contains "bench train $prec" '^\{"bench":"train".*"step_s":[0-9.]+.*"peak_kind":"onednn (f32|bf16) 1024\^3","mfu":[0-9.]+'
done

# generate: a tiny GPT-2 trained for 2 steps (its final/ directory is a HF model directory).
for i in $(seq 40); do echo "The quick brown fox jumps over the lazy dog. Hello world, again."; done > "$TMP/gen.txt"
cat > "$TMP/gen.yaml" <<EOF
output_dir: $TMP/genrun
seed: 1
model:
  arch: gpt2
  config: {n_layer: 1, n_head: 2, n_embd: 16, n_positions: 32}
tokenizer: $GPT2
data:
  train: [$TMP/gen.txt]
  seq_len: 16
train:
  micro_batch_size: 2
  max_steps: 2
checkpoint:
  every: 0
EOF
GEN="$TMP/genrun/final"
check "generate: train tiny model" 0 "$HFRUN" train "$TMP/gen.yaml"
check "generate --ids" 0 "$HFRUN" generate --model "$GEN" --prompt "Hello world" --max-new-tokens 5 --ids
contains "generate --ids" '^\[15496,995(,[0-9]+){1,5}\]$'
check "generate greedy" 0 "$HFRUN" generate --model "$GEN" --prompt "Hello world" --max-new-tokens 6 --greedy
first="$out"
contains "generate greedy" '^Hello world'
check "generate greedy again" 0 "$HFRUN" generate --model "$GEN" --prompt "Hello world" --max-new-tokens 6 --greedy
[ "$out" = "$first" ] && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL: generate --greedy differs between runs"; }
check "generate sampled" 0 "$HFRUN" generate --model "$GEN" --temperature 0.8 --top-k 20 --top-p 0.9 --seed 3 --ids
contains "generate sampled" '^\[50256(,[0-9]+)*\]$'
check "generate to n_positions" 0 "$HFRUN" generate --model "$GEN" --prompt "Hello world" --max-new-tokens 100 --ids
contains "generate to n_positions" 'n_positions'
check "generate missing model" 2 "$HFRUN" generate --model "$TMP/no_model"
contains "generate missing model" 'no_model'
check "generate bad top-p" 2 "$HFRUN" generate --model "$GEN" --top-p 1.5
contains "generate bad top-p" 'top-p'
check "generate greedy with sampling" 2 "$HFRUN" generate --model "$GEN" --greedy --temperature 0.5
check "generate bad temperature" 2 "$HFRUN" generate --model "$GEN" --temperature 0
mkdir -p "$TMP/no_tok" && cp "$GEN/config.json" "$GEN/model.safetensors" "$TMP/no_tok/"
check "generate missing tokenizer" 2 "$HFRUN" generate --model "$TMP/no_tok"
contains "generate missing tokenizer" 'tokenizer.json'

# Fine-tuning a directory whose config.json does not match its weights: exit 2 naming the tensor.
mkdir -p "$TMP/bad_shape" && cp "$GEN/model.safetensors" "$GEN/tokenizer.json" "$TMP/bad_shape/"
sed -E 's/"n_embd": *16/"n_embd": 32/' "$GEN/config.json" > "$TMP/bad_shape/config.json"
check "fine-tune shape mismatch" 2 "$HFRUN" "$TMP/gen.yaml" --set "model.from_pretrained=$TMP/bad_shape" \
  --set model.config={} --set "output_dir=$TMP/bad_run"
contains "fine-tune shape mismatch" 'transformer\.(wte|wpe|h\.0)[^ ]* .*shape'
check "fine-tune with progress" 0 env HFRUN_PROGRESS_AFTER_S=0 "$HFRUN" "$TMP/gen.yaml" \
  --set "model.from_pretrained=$GEN" --set model.config={} --set "output_dir=$TMP/ft_run"
contains "fine-tune with progress" "hfrun: loading weights $GEN: .* of .* \(100%\), [0-9]+ s, done"
contains "export with progress" "hfrun: writing $TMP/ft_run/final\.tmp-[0-9]+/model\.safetensors: .* \(100%\), [0-9]+ s, done"
check "train config typo" 2 "$HFRUN" "$TMP/gen.yaml" --set train.max_stepz=3
contains "train config typo" 'train.max_stepz'
check "train missing config" 2 "$HFRUN" "$TMP/nope.yaml"
contains "train missing config" 'nope.yaml'
check "train tensor_parallel not dividing ranks refused clearly" 2 "$HFRUN" -np 2 "$TMP/gen.yaml" --set distributed.tensor_parallel=3
contains "train tensor_parallel not dividing ranks refused clearly" "tensor_parallel 3 must divide"
check "train dry run" 0 "$HFRUN" "$TMP/gen.yaml" --dry-run
contains "train dry run" '^output_dir: '
# torchrun spellings: --nnodes x --nproc-per-node over a hostfile places ranks per node;
# torchrun's per-node launch options are refused with a pointer to the hostfile/srun way.
printf 'n1 slots=2\nn2 slots=2\n' > "$TMP/hosts"
check "torchrun nnodes dry run" 0 "$HFRUN" --nnodes 2 --nproc_per_node 2 --hostfile "$TMP/hosts" "$TMP/gen.yaml" --dry-run
contains "torchrun nnodes dry run" "mpirun.* -np 4 --map-by ppr:2:node --hostfile $TMP/hosts "
contains "torchrun nnodes dry run" "distributed.num_processes=4"
# Ranks float over the cores (Open MPI would bind 2 ranks to one core each) unless the user
# asks for a binding, and glibc maps MPI's temporary buffers in huge pages, the user's tunables
# kept.
check "ranks unbound dry run" 0 env GLIBC_TUNABLES=glibc.malloc.arena_max=2 "$HFRUN" -np 2 "$TMP/gen.yaml" --dry-run
contains "ranks unbound dry run" "mpirun.* --bind-to none -x GLIBC_TUNABLES=glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1 "
check "user's binding dry run" 0 env OMPI_MCA_hwloc_base_binding_policy=core GLIBC_TUNABLES=glibc.malloc.hugetlb=0 "$HFRUN" -np 2 "$TMP/gen.yaml" --dry-run
contains "user's binding dry run" "mpirun.* -x GLIBC_TUNABLES=glibc.malloc.hugetlb=0 "
lacks "user's binding dry run" "bind-to"
check "torchrun node-rank refused" 2 "$HFRUN" --nnodes 2 --nproc-per-node 2 --node-rank 1 --master-addr n1 "$TMP/gen.yaml"
contains "torchrun node-rank refused" "node-rank is torchrun's one-launcher-per-node option.*--hostfile"
check "torchrun nnodes without hosts refused" 2 env -u SLURM_JOB_ID "$HFRUN" --nnodes 2 --nproc-per-node 2 "$TMP/gen.yaml"
contains "torchrun nnodes without hosts refused" "needs the nodes: --hostfile FILE"
check "-np 0 refused" 2 "$HFRUN" -np 0 "$TMP/gen.yaml"
contains "-np 0 refused" "the number of processes must be at least 1$"
# Errors end with what was wrong; the source location only with HFRUN_DEBUG=1.
check "HFRUN_DEBUG=1 adds the source location" 2 env HFRUN_DEBUG=1 "$HFRUN" -np 0 "$TMP/gen.yaml"
contains "HFRUN_DEBUG=1 adds the source location" "at least 1 \[cmd_train\.cpp:[0-9]+\]$"
check "-np -2 refused" 2 "$HFRUN" -np -2 "$TMP/gen.yaml"
check "torchrun nproc-per-node contradicting -np" 2 "$HFRUN" -np 3 --nproc-per-node 2 "$TMP/gen.yaml"
check "nccl backend on a CPU machine refused" 2 "$HFRUN" "$TMP/gen.yaml" --set train.device=auto --set distributed.backend=nccl
contains "nccl backend on a CPU machine refused" "distributed.backend nccl needs a GPU"
[ ! -e "$TMP/bad_run/final" ] && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL: a failed run left final/"; }

# checkpoints: a run killed with SIGKILL after its first checkpoint, then resumed (resume: auto),
# logs exactly the losses of an uninterrupted run (dropout and shuffling on). One thread, so
# the two runs compute identically and quickly.
for i in $(seq 60); do echo "Line $i: the boat carries $((i % 7)) apples to the market."; done > "$TMP/ck.txt"
ck_yaml() {  # ck_yaml OUTPUT_DIR > FILE
  cat <<EOF
output_dir: $1
seed: 7
model: {config: {n_layer: 1, n_head: 2, n_embd: 16, n_positions: 32, resid_pdrop: 0.1}}
tokenizer: $GPT2
data: {train: [$TMP/ck.txt], seq_len: 16, shuffle: true}
train: {micro_batch_size: 2, max_steps: 60, log_every: 1}
scheduler: {type: cosine, warmup_steps: 5}
checkpoint: {every: 5, keep: 2}
EOF
}
ck_losses() { grep -oE '"step": [0-9]+, "loss": [0-9.]+' "$1/metrics.jsonl"; }
ck_yaml "$TMP/ck_full" > "$TMP/ck_full.yaml"
ck_yaml "$TMP/ck_kill" > "$TMP/ck_kill.yaml"
check "checkpoint: uninterrupted run" 0 env OMP_NUM_THREADS=1 "$HFRUN" train "$TMP/ck_full.yaml"
# SIGKILL at a step the test controls (the fault hook: the run kills itself after step 7, two
# steps past its first checkpoint), not a race against a timer.
HFRUN_FAULT_SIGNAL=0:7:9 OMP_NUM_THREADS=1 "$HFRUN" train "$TMP/ck_kill.yaml" > "$TMP/ck_kill.log" 2>&1
rc=$?
if [ $rc -eq 137 ] && [ -f "$TMP/ck_kill/checkpoints/step-00000005/manifest.json" ] &&
  ! [ -d "$TMP/ck_kill/final" ] && grep -q '"step": 7,' "$TMP/ck_kill/metrics.jsonl"; then
  pass=$((pass + 1))
else
  fail=$((fail + 1))
  echo "FAIL: checkpoint: the run was not killed after step 7 (exit $rc)"
  head -5 "$TMP/ck_kill.log"
fi
# (HFRUN_PROGRESS_AFTER_S=0: the progress of long phases reported from the start.)
check "checkpoint: resume after SIGKILL" 0 env OMP_NUM_THREADS=1 HFRUN_PROGRESS_AFTER_S=0 \
  "$HFRUN" train "$TMP/ck_kill.yaml"
contains "checkpoint: resume after SIGKILL" 'resuming from .*/checkpoints/step-[0-9]{8} \(step [0-9]+\)'
contains "progress of a checkpoint's checksums" 'hfrun: checking .*/checkpoints/step-[0-9]{8}/rank-00000-of-00001.model.safetensors: .* of .* \(100%\), [0-9]+ s, done'
if [ "$(ck_losses "$TMP/ck_kill")" = "$(ck_losses "$TMP/ck_full")" ] &&
  [ "$(ck_losses "$TMP/ck_full" | wc -l)" -eq 60 ]; then pass=$((pass + 1)); else
  fail=$((fail + 1))
  echo "FAIL: checkpoint: resumed losses differ from the uninterrupted run's"
  diff <(ck_losses "$TMP/ck_full") <(ck_losses "$TMP/ck_kill") | head -10
fi
# The same command once more: the run is complete; it says so and writes nothing.
final_before=$(stat -c %Y.%i "$TMP/ck_kill/final/model.safetensors")
check "finished run started again" 0 env OMP_NUM_THREADS=1 "$HFRUN" train "$TMP/ck_kill.yaml"
contains "finished run started again" "run already complete: step 60 of 60 \(.*step-00000060\); the final model is in .*/final"
if grep -q "tokens/s" <<<"$out" || [ "$(stat -c %Y.%i "$TMP/ck_kill/final/model.safetensors")" != "$final_before" ]; then
  fail=$((fail + 1)); echo "FAIL: a finished run started again trained or exported again:"; echo "$out" | head -5
else
  pass=$((pass + 1))
fi
ls "$TMP/ck_kill/checkpoints" > "$TMP/ck_list"
if [ "$(cat "$TMP/ck_list")" = "$(printf 'step-00000055\nstep-00000060')" ]; then
  pass=$((pass + 1))
else
  fail=$((fail + 1))
  echo "FAIL: checkpoint: keep 2 should leave step-00000055 and step-00000060, found:"
  cat "$TMP/ck_list"
fi
check "checkpoint: resume from a missing path" 2 env OMP_NUM_THREADS=1 "$HFRUN" train \
  "$TMP/ck_kill.yaml" --set "checkpoint.resume=$TMP/no_such_ckpt"
contains "checkpoint: resume from a missing path" 'no_such_ckpt: no such checkpoint directory'

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
