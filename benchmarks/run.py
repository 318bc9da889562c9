"""`make bench`: how fast the scaffold converts, feeds and trains, as ratios measured in one run.

    python -m benchmarks.run            # the full suite, ~14 minutes on 2 quiet cores; rewrites
                                        # benchmarks/results.json and benchmarks/RESULTS.md
    python -m benchmarks.run --quick    # smoke-test sizes; writes out/bench/quick-results.json

Rows (ROWS below): 1. conversion, all cores vs 1 worker, and peak memory at 10x the images;
2. input pipeline vs the in-memory kernel ceiling; 3. training with the real input vs a cached
batch; 4. Estimator.train vs a bare Session loop; 5. evaluation time with the evaluation report
vs without; 6. evaluation time with batch-norm recalibration vs evaluation alone; 7. a run
evaluating every epoch vs once; 8. head-only epochs on the pretrained network with the feature
cache vs without; 9. its caching pass vs the network alone; 10. fine-tuning steps through run.py
vs a bare Session loop. Every row runs at least 3 rounds
(1 in --quick). RESULTS.md is written next to the results file (``benchmarks/RESULTS.md`` for
``benchmarks/results.json``, else ``<results>.md``), so a quick run never replaces the
committed results by default.
"""

import argparse
import glob
import json
import os
import sys
import time

from library.tensorflow_env import import_tensorflow, use_graph_mode

tf = import_tensorflow()  # first: it configures TensorFlow's environment before any other import loads it

from benchmarks import (conversion, evaluation, feature_caching, fine_tuning, framework, measure,  # noqa: E402
                        photos, pipeline, recalibration, report, training, waiting)
from benchmarks.suite import Context, Policy, Row  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results.json")
RESULTS_MARKDOWN = os.path.join(ROOT, "benchmarks", "RESULTS.md")

# Each row, and the seconds its rounds take on a quiet 2-core machine (the log prints what each row took): a row
# adds rounds replacing disturbed ones only while the rows after it keep that time before TIME_LIMIT.
ROWS = (
    Row(conversion.row, 105),
    Row(pipeline.row, 50),
    Row(training.row, 130),
    Row(framework.row, 95),
    Row(evaluation.row, 75),
    Row(recalibration.row, 95),
    Row(waiting.cycles_row, 85),
    Row(waiting.cache_row, 50),
    Row(feature_caching.row, 20),
    Row(fine_tuning.row, 110),
)
# Seconds: rounds replacing disturbed ones end by then (about 14 minutes when none is); the rounds every row needs
# run whatever the time, so on a busy machine the suite takes longer.
TIME_LIMIT = 1010
FULL = Policy(rounds=3, cheap_rounds=5, max_extra_rounds=2, quiet_wait=15)
QUICK = Policy(rounds=1, cheap_rounds=1, max_extra_rounds=0, quiet_wait=0)
IMAGES = {"full": 2000, "quick": 200}
LARGE_COPIES = 10  # hard-linked copies of the photos for row 1's memory comparison (not in --quick)

DATA_TEXT = (
    "{images:,} photo-like JPEGs ({megabytes:.0f} MB, longer edge 256-800 px, quality 70-95, one in ten "
    "progressive): random crops of the two photographs scikit-learn ships (china.jpg, flower.jpg), one class per "
    "photograph; see `benchmarks/photos.py`. Converted with `convert_dataset.py --max_edge {max_edge}` into "
    "{records:,} records, {record_megabytes:.0f} MB in {shards} shards (the converter's default), which rows 2-6 "
    "and 9 read; rows 7 and 8 train on a small set of them converted at 192 px."
)
LARGE_DATA_TEXT = (
    " The memory comparison converts {large_images:,} images: the same files hard-linked {copies} times into "
    "nested folders."
)


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


def data_summary(context: Context) -> dict:
    """Sizes of the generated photos and of the records the converter wrote."""
    files = glob.glob(os.path.join(context.photos_dir, "*", "*.jpg"))
    with open(os.path.join(context.records_dir, "train-manifest.json")) as handle:
        manifest = json.load(handle)
    copies = LARGE_COPIES if context.large_photos_dir else None
    return {
        "images": len(files),
        "megabytes": sum(os.path.getsize(path) for path in files) / 2**20,
        "records": manifest["total_images"],
        "record_megabytes": sum(shard["bytes"] for shard in manifest["shards"]) / 2**20,
        "shards": len(manifest["shards"]),
        "max_edge": manifest["max_edge"],
        "large_images": copies and copies * len(files),
        "copies": copies,
    }


def data_text(data: dict) -> str:
    """The Data section of RESULTS.md."""
    return DATA_TEXT.format_map(data) + (LARGE_DATA_TEXT.format_map(data) if data["large_images"] else "")


def prepare(output_dir: str, quick: bool) -> Context:
    """The rows' context, with the photo-like data generated once into ``output_dir`` (kept there for later runs)."""
    images = IMAGES["quick" if quick else "full"]
    log(f"data: {images} photo-like JPEGs")
    photos_dir = photos.ensure_photos(os.path.join(output_dir, f"photos-{images}"), images)
    large_dir = None
    if not quick:
        large_dir = photos.ensure_hard_linked_copies(
            photos_dir, os.path.join(output_dir, f"photos-{images}x{LARGE_COPIES}"), LARGE_COPIES)
    return Context(quick=quick, policy=QUICK if quick else FULL, output_dir=output_dir, photos_dir=photos_dir,
                   large_photos_dir=large_dir, records_dir=os.path.join(output_dir, f"conversion-{images}", "records"),
                   log=log)


def measure_rows(context: Context, deadline: measure.Budget) -> list:
    """Every row of ROWS in order, each allowed extra rounds while the rows after it keep their time."""
    for index, row in enumerate(ROWS):
        context.budget = measure.Budget(deadline.left() - sum(later.quiet_seconds for later in ROWS[index + 1:]))
        started, cpu = time.monotonic(), measure.own_cpu_seconds()
        context.done.append(row.measure(context))
        log(f"  ({context.done[-1]['id']}: {time.monotonic() - started:.0f} s, "
            f"{measure.own_cpu_seconds() - cpu:.0f} CPU-seconds)")
    return context.done


def main(argv=None) -> int:
    use_graph_mode()
    args = parse_args(argv)
    output_dir = os.path.abspath(args.output_dir)
    results_path = os.path.abspath(args.results or (os.path.join(output_dir, "quick-results.json") if args.quick else RESULTS))
    started = time.time()
    load_before = measure.others_load(1.0)
    log(f"benchmarks{' --quick' if args.quick else ''}: output in {output_dir}; other processes use "
        f"{load_before:.2f} cores now")
    context = prepare(output_dir, args.quick)
    rows = measure_rows(context, measure.Budget(TIME_LIMIT - (time.time() - started)))
    data = data_summary(context)
    results = {
        "suite": "python -m benchmarks.run" + (" --quick" if args.quick else ""),
        "quick": args.quick,
        "started": started,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
        "duration_seconds": time.time() - started,
        "machine": {**measure.machine(), "tensorflow": tf.__version__},
        "load_before": load_before,
        "disturbed_cores": measure.DISTURBED_CORES,
        "policy": {"target_rounds": context.policy.rounds, "time_limit_minutes": TIME_LIMIT / 60},
        "data": data,
        "data_text": data_text(data),
        "rows": rows,
    }
    report.write(results, results_path, markdown_path(results_path))
    log("")
    log(report.text_table(results))
    log(f"\n{results['duration_seconds'] / 60:.1f} minutes; results in {results_path} and {markdown_path(results_path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
