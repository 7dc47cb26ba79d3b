#!/usr/bin/env bash
# The prepared GPU check of issue 17, under 8 minutes on one GPU (H200 sized; no vLLM or `datasets` needed):
#   1. bench/train_bench.py: one measured SCoRe step of a random Qwen2.5-1.5B-shaped model after one warm-up step:
#      the step's time split, the update/bare forward+backward ratio, peak memory, step-0 KL (0 before any update);
#   2. bench/rollout_bench.py: sampled tokens/s of the HF engine eager and compiled (rollout.hf_compile), one run
#      each, on the same prompts.
# Each writes its JSON under ${OUT:-/tmp/gpu_check}; a summary of both is printed and written to summary.txt.
#
#   bash bench/gpu_check.sh                      # on the GPU machine
#   GPU_CHECK_SMALL=1 bash bench/gpu_check.sh    # CPU sizes (tiny models, 4 tokens), as tests/test_bench.py runs it
#
# PYTHON picks the interpreter (default: .venv/bin/python if present, else python3). Every part has its own time
# limit, so the whole check stays under 8 minutes even when a part hangs; a part that fails is reported and the
# others still run.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu_check}"
mkdir -p "$OUT"
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

# part NAME LIMIT_SECONDS COMMAND...: run with its own time limit and log; a failure is reported, the rest still runs
status=0
part() {
    local name=$1 limit=$2
    shift 2
    if ! timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; then
        status=1
        echo "$name failed or ran past ${limit}s; the end of $OUT/$name.log:"
        tail -5 "$OUT/$name.log"
    fi
}

if [ "${GPU_CHECK_SMALL:-0}" = 1 ]; then
    TRAIN=(--model tiny --max-new-tokens 4)
    ROLLOUT=(--model cpu-50m --problems 2 --samples 1 --max-new-tokens 4)
    ENGINES=(hf)
    LIMITS=(600 300)
else  # at most 250 s of training (its warm-up step compiles the decode step) + 2 x 110 s of sampling: 7.8 minutes
    TRAIN=(--model qwen2.5-1.5b --batch-size 8 --max-new-tokens 256)
    ROLLOUT=(--model qwen2.5-1.5b --problems 32 --samples 2 --max-new-tokens 256)
    ENGINES=(hf hf-compiled)
    LIMITS=(250 110)
fi

"$PYTHON" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__,
    "device", torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")' | tee "$OUT/versions.txt"
part train "${LIMITS[0]}" "$PYTHON" bench/train_bench.py "${TRAIN[@]}" --steps 1 --warmup 1 --json "$OUT/train.json"
for engine in "${ENGINES[@]}"; do
    part "rollout_$engine" "${LIMITS[1]}" "$PYTHON" bench/rollout_bench.py "${ROLLOUT[@]}" --batches 1 \
        --engines "$engine" --json "$OUT/rollout_$engine.json"
done

"$PYTHON" - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
train = out / "train.json"
if train.exists():
    result = json.loads(train.read_text())
    settings, seconds, rate = result["settings"], result["seconds"], result["tokens_per_second"]
    print(f"step of {settings['model']} ({settings['layers']} layers) on {settings['device']}, "
          f"{settings['conversations']} conversations, max_new_tokens {settings['max_new_tokens']}:")
    for key in ("generate", "score", "reference", "backward", "optimizer", "other", "total"):
        print(f"  {key:10s} {seconds[key]:9.3f} s")
    print(f"  sampled tokens/s in training {rate['generated']:.1f}")
    print(f"  update tokens/s {rate['trained']:.1f}, bare forward+backward {rate['bare_forward_backward']:.1f}, "
          f"update_vs_bare {result['update_vs_bare']:.2f}")
    print(f"  peak memory {result['peak_memory_bytes'] / 2**30:.2f} GiB")
    print(f"  step-0 KL {result['step0_kl']}")
else:
    print("no train.json (train_bench failed)")
print("sampled tokens/s per engine (rollout_bench, one batch after a warm-up batch):")
for path in sorted(out.glob("rollout_*.json")):
    for name, engine in json.loads(path.read_text())["results"].items():
        print(f"  {name:12s} {engine['tokens_per_second']:10.1f}   (first batch {engine['seconds_first_batch']:.1f} s)")
EOF
exit $status
