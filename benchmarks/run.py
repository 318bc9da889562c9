"""`make bench`: how fast the scaffold converts, feeds and trains, as ratios measured in one run.

    python -m benchmarks.run            # the full suite, ~17 (at most 18) minutes on 2 cores; rewrites
                                        # benchmarks/results.json and benchmarks/RESULTS.md
    python -m benchmarks.run --quick    # smoke-test sizes (CI); writes out/bench/quick-results.json

Rows: 1. conversion, all cores vs 1 worker, and peak memory at 10x the images;
2. input pipeline vs the in-memory kernel ceiling; 3. training with the real input vs a
cached batch; 4. Estimator.train vs a bare Session loop; 5. evaluation time with the
evaluation report vs without; 6. evaluation time with batch-norm recalibration vs evaluation
alone; 7. a run evaluating every epoch vs once; 8. head-only epochs on the pretrained network with the
feature cache vs without; 9. its caching pass vs the network alone;
10. fine-tuning steps through run.py vs a bare Session loop. RESULTS.md is written next to
the results file (``benchmarks/RESULTS.md`` for ``benchmarks/results.json``, else
``<results>.md``), so a quick run never replaces the committed results by default.
"""

import argparse
import dataclasses
import glob
import json
import os
import sys
import time

from library.tensorflow_env import import_tensorflow, use_graph_mode

tf = import_tensorflow()  # first: it configures TensorFlow's environment before any other import loads it

from benchmarks import (conversion, evaluation, feature_caching, fine_tuning, measure, photos, pipeline,  # noqa: E402
                        project_config, recalibration, report, training, waiting)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results.json")
RESULTS_MARKDOWN = os.path.join(ROOT, "benchmarks", "RESULTS.md")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much each stage measures, and how the rounds are repeated."""

    images: int
    large_copies: int  # hard-linked copies for the memory comparison; 0 skips it
    rounds: int  # undisturbed rounds wanted per stage
    head_only_rounds: int  # the same for the cheap head-only training loops, whose rates vary more
    max_extra_rounds: int  # rounds that may replace disturbed ones, time allowing
    quiet_wait: float  # seconds to wait for a quiet machine before a round
    input_batches: int
    train_warmup: int
    train_steps: int  # timed steps, head only (a step ~0.1 s on 2 cores; 100 hold one periodic summary)
    fine_tuning_steps: int  # timed steps, end to end (~0.37 s each)
    cycles_epochs: int  # epochs of the cycles row's runs (~2 s each, plus the evaluations)
    cache_epochs: int  # epochs of the feature cache row's runs (~7 s each uncached)
    caching_shards: int  # shards of the benchmark records the caching pass row reads (250 images each)
    caching_batch: int  # the caching pass's batch size (eval_batch_size)


FULL = Sizes(images=2000, large_copies=10, rounds=2, head_only_rounds=4, max_extra_rounds=1, quiet_wait=15,
             input_batches=200, train_warmup=10, train_steps=100, fine_tuning_steps=40, cycles_epochs=10,
             cache_epochs=2, caching_shards=2, caching_batch=64)
QUICK = Sizes(images=200, large_copies=0, rounds=1, head_only_rounds=1, max_extra_rounds=0, quiet_wait=0,
              input_batches=2, train_warmup=2, train_steps=3, fine_tuning_steps=2, cycles_epochs=2, cache_epochs=1,
              caching_shards=1, caching_batch=8)
# `make bench` must end within 18 minutes: rounds that replace disturbed ones start only while the
# stages after them keep the time their own rounds take on a quiet 2-core machine (seconds).
TIME_LIMIT = 1070
LATER = {"training": 260, "evaluation": 60, "recalibration": 60, "cycles": 130, "feature_cache": 100,
         "pretrained_caching": 130, "fine_tuning": 110}
LATER_STAGES_SECONDS = {"conversion": 50 + 80 + sum(LATER.values()),  # 50: the 10x conversion
                        "input": sum(LATER.values()),
                        **{stage: sum(list(LATER.values())[index + 1:]) for index, stage in enumerate(LATER)}}


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round: checks the suite works")
    parser.add_argument("--output_dir", default=os.path.join(ROOT, "out", "bench"),
                        help="generated photos, converted records and scratch (default: out/bench)")
    parser.add_argument("--results", help="results JSON (default: benchmarks/results.json; "
                                          "with --quick: OUTPUT_DIR/quick-results.json)")
    return parser.parse_args(argv)


def markdown_path(results_path: str) -> str:
    """Where the markdown goes: benchmarks/RESULTS.md for the committed results, else beside the results file."""
    if os.path.abspath(results_path) == RESULTS:
        return RESULTS_MARKDOWN
    return os.path.splitext(results_path)[0] + ".md"


def log(message: str) -> None:
    print(message, flush=True)


def data_summary(photos_dir: str, records_dir: str, large_images) -> dict:
    """Sizes of the generated photos and of the records the converter wrote."""
    files = glob.glob(os.path.join(photos_dir, "*", "*.jpg"))
    with open(os.path.join(records_dir, "train-manifest.json")) as handle:
        manifest = json.load(handle)
    return {
        "images": len(files),
        "megabytes": sum(os.path.getsize(path) for path in files) / 2**20,
        "records": manifest["total_images"],
        "record_megabytes": sum(shard["bytes"] for shard in manifest["shards"]) / 2**20,
        "shards": len(manifest["shards"]),
        "max_edge": manifest["max_edge"],
        "large_images": large_images,
    }


def main(argv=None) -> int:
    use_graph_mode()
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    output_dir = os.path.abspath(args.output_dir)
    results_path = os.path.abspath(args.results or (os.path.join(output_dir, "quick-results.json") if args.quick else RESULTS))
    started = time.time()
    load_before = measure.others_load(1.0)
    log(f"benchmarks{' --quick' if args.quick else ''}: output in {output_dir}; other processes use "
        f"{load_before:.2f} cores now")

    log(f"data: {sizes.images} photo-like JPEGs")
    photos_dir = photos.ensure_photos(os.path.join(output_dir, f"photos-{sizes.images}"), sizes.images)
    large_dir = None
    if sizes.large_copies:
        large_dir = photos.ensure_hard_linked_copies(
            photos_dir, os.path.join(output_dir, f"photos-{sizes.images}x{sizes.large_copies}"), sizes.large_copies)

    deadline = measure.Budget(TIME_LIMIT - (time.time() - started))

    def run_stage(stage):
        budget = measure.Budget(deadline.left() - LATER_STAGES_SECONDS[stage])
        return dict(budget=budget, rounds=sizes.rounds, max_extra=sizes.max_extra_rounds, quiet_wait=sizes.quiet_wait,
                    log=log)

    rows = []
    row, records_dir = conversion.run(photos_dir, large_dir, os.path.join(output_dir, f"conversion-{sizes.images}"),
                                      **run_stage("conversion"))
    rows.append(row)
    rows.append(pipeline.run(records_dir, sizes.input_batches, **run_stage("input")))
    input_rate = rows[-1]["figures"]["pipeline_images_per_sec"]
    rows += training.run(records_dir, output_dir, sizes.train_warmup, sizes.train_steps, sizes.fine_tuning_steps,
                         input_rate, head_only_rounds=sizes.head_only_rounds, **run_stage("training"))
    rows.append(evaluation.run(records_dir, output_dir, **run_stage("evaluation")))
    rows.append(recalibration.run(records_dir, output_dir, **run_stage("recalibration")))
    rows.append(waiting.cycles_row(photos_dir, output_dir, sizes.cycles_epochs, **run_stage("cycles")))
    small_set, _ = waiting.small_set(photos_dir, output_dir)
    cache_data = {"train_data": os.path.join(small_set, "train", "train-*.tfrecord"),
                  "eval_data": os.path.join(small_set, "test", "test-*.tfrecord"),
                  "labels_file": os.path.join(small_set, "train", "labels.txt")}
    rows.append(waiting.cache_row(waiting.cache_argv(cache_data, feature_caching.NETWORK, sizes.cache_epochs),
                                  output_dir, **run_stage("feature_cache")))
    rows.append(feature_caching.run(records_dir, sizes.caching_shards, sizes.caching_batch, output_dir,
                                    **run_stage("pretrained_caching")))
    rows.append(fine_tuning.run(records_dir, output_dir, min(sizes.train_warmup, 5), sizes.fine_tuning_steps,
                                **run_stage("fine_tuning")))

    results = {
        "suite": "python -m benchmarks.run" + (" --quick" if args.quick else ""),
        "quick": args.quick,
        "started": started,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
        "duration_seconds": time.time() - started,
        "machine": {**measure.machine(), "tensorflow": tf.__version__},
        "load_before": load_before,
        "disturbed_cores": measure.DISTURBED_CORES,
        "data": data_summary(photos_dir, records_dir, sizes.images * sizes.large_copies or None),
        "rows": rows,
    }
    report.write(results, results_path, markdown_path(results_path))
    log("")
    log(report.text_table(results))
    log(f"\n{results['duration_seconds'] / 60:.1f} minutes; results in {results_path} and {markdown_path(results_path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
