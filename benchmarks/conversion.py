"""Row 1: convert_dataset.py with one worker against all cores, and its peak memory as the folder grows.

The converter runs as users run it (``python convert_dataset.py ...``, whose ``main`` does
the work) in a child process, so its whole process tree can be watched for memory. Its
speed is the figure it prints itself (``speed: N images/s``): from the start of the
conversion (after Python and TensorFlow are loaded) to the written manifest, so it
includes listing the folder, starting the workers and finishing the shards.
"""

import os
import re
import shutil
import sys

from benchmarks import measure
from benchmarks.report import target

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_EDGE = 384
SPEED = re.compile(r"images: (\d+), .* speed: (\d+) images/s")


class ConversionFailed(RuntimeError):
    """The converter exited with an error; the message carries its stderr tail."""


def convert(dataset_dir: str, output_dir: str, workers: int) -> dict:
    """Convert ``dataset_dir`` into ``output_dir`` with ``workers`` processes; its speed, memory and CPU."""
    command = [
        sys.executable, os.path.join(ROOT, "convert_dataset.py"), "--dataset_dir", dataset_dir,
        "--tfrecord_filename", "train", "--tfrecord_dir", output_dir, "--max_edge", str(MAX_EDGE),
        "--num_workers", str(workers),
    ]
    before = measure.own_cpu_seconds()
    result = measure.run_with_peak_memory(command, cwd=ROOT)
    match = SPEED.search(result["stdout"])
    if result["returncode"] != 0 or not match:
        raise ConversionFailed(f"convert_dataset.py exited with {result['returncode']}: {result['stderr'][-2000:]}")
    return {
        "images": int(match.group(1)),
        "images_per_sec": float(match.group(2)),
        "tree_pss": result["tree_pss"],
        "main_hwm": result["main_hwm"],
        "main_cpu": result["main_cpu"],
        "tree_cpu": measure.own_cpu_seconds() - before,
    }


def run(photos_dir: str, large_photos_dir, work_dir: str, budget, rounds: int, max_extra: int, quiet_wait: float,
        log=print) -> tuple:
    """Row 1's figures; returns (row dict, records folder of the all-cores conversion for the other rows)."""
    cores = os.cpu_count()
    outputs = {1: os.path.join(work_dir, "workers-1"), cores: os.path.join(work_dir, "records")}

    def one(workers):
        def measurement():
            figures = convert(photos_dir, outputs[workers], workers)
            return figures["images_per_sec"], figures
        return measurement

    log(f"  conversion: 1 worker vs {cores} (all cores), max_edge {MAX_EDGE}")
    done = measure.rounds({"1 worker": one(1), "all cores": one(cores)}, rounds, budget, max_extra, quiet_wait, log)
    speedup = measure.ratio_summary(done, "all cores", "1 worker")
    small = {key: measure.median_detail(done, "all cores", key) for key in ("tree_pss", "main_hwm")}
    small["images"] = done[0]["all cores"].details["images"]
    one_worker = measure.used_samples(done, "1 worker")[0]["1 worker"].details
    figures = {
        "images": small["images"],
        "cores": cores,
        "images_per_sec_1_worker": measure.median_value(done, "1 worker"),
        "images_per_sec_all_cores": measure.median_value(done, "all cores"),
        "speedup": speedup["ratio"],
        "main_process_cpu_seconds_1_worker": one_worker["main_cpu"],
        "tree_cpu_seconds_1_worker": one_worker["tree_cpu"],
        "peak_tree_pss_small": small["tree_pss"],
        "peak_main_rss_small": small["main_hwm"],
    }
    log(f"    {small['images']} images: peak tree PSS {small['tree_pss'] / 2**20:.0f} MB, "
        f"main process {small['main_hwm'] / 2**20:.0f} MB")
    memory_ratio = None
    if large_photos_dir:
        log(f"  conversion memory: {large_photos_dir}, all cores")
        large_output = os.path.join(work_dir, "large")
        large = measure.sample(lambda: convert(large_photos_dir, large_output, cores))
        shutil.rmtree(large_output, ignore_errors=True)  # hundreds of MB nobody reads
        details = large.value
        memory_ratio = details["tree_pss"] / small["tree_pss"]
        figures.update({
            "images_large": details["images"],
            "images_per_sec_large": details["images_per_sec"],
            "peak_tree_pss_large": details["tree_pss"],
            "peak_main_rss_large": details["main_hwm"],
            "memory_ratio": memory_ratio,
            "memory_ratio_main_process": details["main_hwm"] / small["main_hwm"],
            "others_during_large": large.others,
        })
        log(f"    {details['images']} images: {details['images_per_sec']:.0f} images/s, "
            f"peak tree PSS {details['tree_pss'] / 2**20:.0f} MB, main process {details['main_hwm'] / 2**20:.0f} MB "
            f"(others {large.others:.2f})")
    if cores > 1:
        shutil.rmtree(outputs[1], ignore_errors=True)  # the records rows 2-4 read are the all-cores ones
    row = {
        "id": "conversion",
        "title": "convert_dataset.py: all cores vs 1 worker, and peak memory as the folder grows",
        "figures": figures,
        "targets": [
            target(f"conversion: all {cores} cores vs 1 worker, images/s", speedup["ratio"], ">=", 1.7, "x", speedup),
            target(f"conversion: peak memory, {figures['images_large']:,} vs {figures['images']:,} images"
                   if large_photos_dir else "conversion: peak memory, 10x the images (skipped in --quick)",
                   memory_ratio, "<=", 1.5, "x"),
        ],
    }
    return row, outputs[cores]

