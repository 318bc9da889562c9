"""Row 2: `run.py --mode benchmark_input` against the in-memory kernel ceiling, decode alone, and the cropping decode.

The pipeline figure is run.py's own (its ``main`` called in this process, the JSON line it
prints parsed); the reference rates come from ``project/input_benchmark.py`` over the
same records' JPEG bytes held in memory. All at image_size 224 and batches of 64.
"""

import contextlib
import io
import json

import run as run_py
from benchmarks import measure, project_config
from benchmarks.report import target
from project import input_benchmark

BATCH_SIZE = 64
IMAGE_SIZE = 224


def run(records_dir: str, batches: int, budget, rounds: int, max_extra: int, quiet_wait: float, log=print) -> dict:
    """Row 2's figures."""
    extra = ("--train_batch_size", str(BATCH_SIZE), "--image_size", str(IMAGE_SIZE))
    argv = project_config.run_argv(records_dir, *extra, "--mode", "benchmark_input", "--benchmark_batches", str(batches))
    _, params = project_config.settings_and_params(records_dir, *extra)
    images = input_benchmark.encoded_images(params["train_data"], limit=None)

    def pipeline():
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            code = run_py.main(argv)
        if code != 0:
            raise RuntimeError(f"run.py --mode benchmark_input exited with {code}")
        report = json.loads(printed.getvalue().strip().splitlines()[-1])
        return report["images_per_sec"], report

    measurements = {
        "pipeline": pipeline,
        "kernel ceiling": lambda: input_benchmark.kernel_ceiling(images, params, batches),
        "decode only": lambda: input_benchmark.decode_only(images, BATCH_SIZE, batches),
        "decode_and_crop_jpeg": lambda: input_benchmark.decode_and_crop_rate(images, params, batches),
        "decode then crop": lambda: input_benchmark.decode_then_crop_rate(images, params, batches),
    }
    log(f"  input pipeline: {len(images)} records, batch {BATCH_SIZE}, {IMAGE_SIZE}x{IMAGE_SIZE}, {batches} batches a measurement")
    done = measure.rounds(measurements, rounds, budget, max_extra, quiet_wait=quiet_wait, log=log)
    efficiency = measure.ratio_summary(done, "pipeline", "kernel ceiling")
    versus_decode = measure.ratio_summary(done, "pipeline", "decode only")
    crop_speedup = measure.ratio_summary(done, "decode_and_crop_jpeg", "decode then crop")
    figures = {name.replace(" ", "_") + "_images_per_sec": measure.median_value(done, name) for name in measurements}
    figures.update({
        "records": len(images),
        "batch_size": BATCH_SIZE,
        "image_size": IMAGE_SIZE,
        "batches": batches,
        "pipeline_vs_ceiling": efficiency["ratio"],
        "pipeline_vs_decode_only": versus_decode["ratio"],
        "decode_and_crop_speedup": crop_speedup["ratio"],
    })
    return {
        "id": "input_pipeline",
        "title": "run.py --mode benchmark_input vs in-memory kernel ceiling",
        "figures": figures,
        "targets": [target("input: run.py --mode benchmark_input / kernel ceiling", efficiency["ratio"], ">=", 0.85, "",
                           efficiency)],
        "references": [
            {"name": "input: pipeline / decode only (tf.io.decode_jpeg)", "value": versus_decode["ratio"], "unit": ""},
            {"name": "input: decode_and_crop_jpeg / decode then crop", "value": crop_speedup["ratio"], "unit": "x"},
        ],
    }
