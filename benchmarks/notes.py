"""What RESULTS.md says about each row: how it is measured, this run's diagnostics, and what profiling found.

The method and findings text is kept here, next to the code that measures, so it is
rewritten with every run; the numbers in it always come from the run itself.
"""

MB = 2**20


def measured_text(row: dict) -> list:
    """The two sides of each target's ratio, in words, e.g. "610 vs 330 images/s"."""
    f = row["figures"]
    if row["id"] == "conversion":
        memory = None
        if f.get("memory_ratio") is not None:
            memory = f"{f['peak_tree_pss_large'] / MB:.0f} vs {f['peak_tree_pss_small'] / MB:.0f} MB"
        return [f"{f['images_per_sec_all_cores']:.0f} vs {f['images_per_sec_1_worker']:.0f} images/s", memory]
    if row["id"] == "input_pipeline":
        return [f"{f['pipeline_images_per_sec']:.0f} vs {f['kernel_ceiling_images_per_sec']:.0f} images/s"]
    if row["id"] == "training":
        return [
            f"{f['end_to_end_steps_per_sec_real_input']:.2f} vs {f['end_to_end_steps_per_sec_synthetic']:.2f} steps/s",
            f"{f['cached_features_steps_per_sec_real_input']:.1f} vs {f['cached_features_steps_per_sec_synthetic']:.1f} "
            "steps/s",
        ]
    if row["id"] == "framework_overhead":
        return [f"{f['steps_per_sec_estimator']:.2f} vs {f['steps_per_sec_session']:.2f} steps/s"]
    if row["id"] == "evaluation":
        return [f"{f['seconds_with_report']:.1f} vs {f['seconds_without']:.1f} s"]
    if row["id"] == "recalibration":
        return [f"{f['seconds_recalibrated']:.1f} vs {f['seconds_alone']:.1f} s"]
    if row["id"] == "cycles":
        return [f"{f['seconds_every_epoch']:.1f} vs {f['seconds_once']:.1f} s"]
    if row["id"] == "feature_cache":
        return [f"{f['epoch_seconds_uncached']:.2f} vs {f['epoch_seconds_cached']:.3f} s an epoch"]
    if row["id"] == "pretrained_caching":
        return [f"{f['images_per_sec_caching']:.1f} vs {f['images_per_sec_bare']:.1f} images/s"]
    if row["id"] == "fine_tuning":
        return [f"{f['steps_per_sec_run_py']:.2f} vs {f['steps_per_sec_session']:.2f} steps/s"]
    return [None] * len(row["targets"])


def data_text(data: dict) -> str:
    return (
        f"{data['images']:,} photo-like JPEGs ({data['megabytes']:.0f} MB, longer edge 256-800 px, quality 70-95, "
        "one in ten progressive): random crops of the two photographs scikit-learn ships (china.jpg, "
        "flower.jpg), one class per photograph; see `benchmarks/photos.py`. Converted with "
        f"`convert_dataset.py --max_edge 384` into {data['records']:,} records, {data['record_megabytes']:.0f} MB "
        f"in {data['shards']} shards (the converter's default), which rows 2-4 read."
        + (f" The memory comparison converts {data['large_images']:,} images: the same files hard-linked "
           f"{data['large_images'] // data['images']} times into nested folders." if data.get("large_images") else "")
    )


def _row_conversion(f: dict) -> list:
    lines = [
        f"`python convert_dataset.py --max_edge 384` over the {f['images']:,} images with `--num_workers 1` and with "
        f"`--num_workers {f['cores']}` (the default, all cores); images/s as the converter prints it (from the start of "
        "the conversion to the written manifest: listing, starting the worker processes and finishing the "
        "shards included, Python and TensorFlow start-up not). Peak memory: the largest sum of the proportional set "
        "sizes (PSS: a page shared by n processes counts 1/n) of the converter and its workers, sampled every 0.2 s; "
        "and the converter's own peak resident set (VmHWM).",
        "",
        f"- 1 worker: {f['images_per_sec_1_worker']:.0f} images/s; the main process (listing, record "
        f"serialization, shard writing, and loading TensorFlow) used {f['main_process_cpu_seconds_1_worker']:.1f} "
        f"of the run's {f['tree_cpu_seconds_1_worker']:.1f} CPU-seconds.",
        f"- all cores: {f['images_per_sec_all_cores']:.0f} images/s.",
        f"- peak memory, {f['images']:,} images: {f['peak_tree_pss_small'] / MB:.0f} MB for the process tree, "
        f"{f['peak_main_rss_small'] / MB:.0f} MB for the main process.",
    ]
    if f.get("memory_ratio") is not None:
        lines.append(
            f"- peak memory, {f['images_large']:,} images: {f['peak_tree_pss_large'] / MB:.0f} MB for the process tree "
            f"({f['memory_ratio']:.2f}x), {f['peak_main_rss_large'] / MB:.0f} MB for the main process "
            f"({f['memory_ratio_main_process']:.2f}x); converted at {f['images_per_sec_large']:.0f} images/s.")
    return lines


def _row_input(f: dict) -> list:
    return [
        f"`run.py --mode benchmark_input` (`default` set, `--train_batch_size {f['batch_size']}`, image_size "
        f"{f['image_size']}, {f['batches']} timed batches after 10 warm-up ones; its `main` runs in the suite's process "
        "and the JSON line it prints is read) against `project/input_benchmark.py`'s in-memory rates over the "
        f"same {f['records']:,} records' JPEG bytes: the kernel ceiling (the pipeline's per-image work and batching "
        "on all cores, nothing else), `tf.io.decode_jpeg` alone, and the training crop decoded with "
        "`decode_and_crop_jpeg` versus decoded whole and then cropped.",
        "",
        f"- pipeline {f['pipeline_images_per_sec']:.0f}, kernel ceiling {f['kernel_ceiling_images_per_sec']:.0f}, "
        f"decode only {f['decode_only_images_per_sec']:.0f}, decode_and_crop_jpeg "
        f"{f['decode_and_crop_jpeg_images_per_sec']:.0f}, decode then crop {f['decode_then_crop_images_per_sec']:.0f} "
        "images/s.",
    ]


def _row_training(f: dict) -> list:
    return [
        f"The small CNN as a hub module ({f['model']}) at batch {f['batch_size']} (the `default` set's) and "
        f"{f['image_size']}x{f['image_size']}, in three configurations: end to end, the small CNN trained (`--fine_tuning`, "
        "as the demo trains it); frozen as the `default` set trains its pretrained module (fine_tuning False: the "
        "feature extractor runs forward only and only the head trains, a much lighter step); and frozen with "
        "`--cache_features` (the head trains on the module's features, computed once before the timed steps: what "
        "the head-only target measures). Each runs in two bare "
        "`tf.compat.v1.Session` loops over the model_fn's train_op: one over `input_fn`, one over a single real "
        "preprocessed batch cached in memory (`Dataset.from_tensors(batch).repeat()`). Timed steps after warm-up: "
        f"{f['end_to_end_timed_steps']} after {f['end_to_end_warmup_steps']} end to end, {f['head_only_timed_steps']} "
        f"after {f['head_only_warmup_steps']} head only.",
        "",
        f"- end to end: a step takes {f['end_to_end_step_ms_real']:.0f} ms with real input, "
        f"{f['end_to_end_step_ms_synthetic']:.0f} ms with the cached batch (medians); it waits "
        f"{f['end_to_end_input_wait_ms']:.2f} ms for its batch (IteratorGetNext in a full trace of 5 steps).",
        f"- head only: {f['head_only_step_ms_real']:.0f} ms vs {f['head_only_step_ms_synthetic']:.0f} ms a step; "
        f"waiting for the batch {f['head_only_input_wait_ms']:.2f} ms (cached batch: "
        f"{f['head_only_input_wait_ms_synthetic']:.2f} ms).",
        f"- head only with cache_features ({f['cached_features_timed_steps']} timed steps): "
        f"{f['cached_features_step_ms_real']:.2f} ms vs "
        f"{f['cached_features_step_ms_synthetic']:.2f} ms a step (without the cache, real / cached batch "
        f"{f['head_only_real_vs_synthetic']:.2f}).",
        "- per-op timing of 5 fully traced steps (op types summed, ms a step, real input vs cached batch): end to end "
        + _ops(f, "end_to_end") + "; head only " + _ops(f, "head_only") + ".",
        f"- the input pipeline alone delivers {f['input_images_per_sec_alone']:.0f} images/s (row 2) using every core, so "
        f"the preprocessing of one batch of {f['batch_size']} takes {f['input_ms_per_step_alone']:.1f} ms of the whole "
        "machine. On a CPU-only machine the model shares those cores: if that work simply added to each step, the "
        f"ratios would be {f['end_to_end_expected_from_cpu_sharing']:.2f} end to end and "
        f"{f['head_only_expected_from_cpu_sharing']:.2f} head only.",
    ]


def _ops(f: dict, prefix: str) -> str:
    """"all ops 98 vs 82, _MklNativeFusedConv2D 94 vs 78, ..." from a traced profile."""
    parts = [f"all ops {f[prefix + '_ops_ms_real']:.1f} vs {f[prefix + '_ops_ms_synthetic']:.1f}"]
    parts += [f"{kind} {real:.1f} vs {cached:.1f}" for kind, real, cached in f[prefix + "_top_ops"]]
    return ", ".join(parts)


def _row_overhead(f: dict) -> list:
    return [
        "`Estimator.train` as the run loop calls it (`run_loop.Run.estimator`'s RunConfig, the stop-on-NaN and "
        "progress-bar hooks, a summary every 100 steps, a checkpoint every save_checkpoints_secs) against the bare "
        "Session loop of row 3 (head only, fine_tuning False as the `default` set: the shortest step, so the largest share of "
        f"overhead), over the same `input_fn`: steady state over {f['timed_steps']} steps after {f['warmup_steps']}"
        + (", so one periodic summary falls inside" if f["timed_steps"] >= 100 else "")
        + f". The checkpoint cost is added as one save every {f['save_checkpoints_secs']} s.",
        "",
        f"- steady state {f['steady_state_ratio']:.3f}: median step {f['step_ms_median_estimator']:.1f} ms vs "
        f"{f['step_ms_median_session']:.1f} ms, slowest step {f['step_ms_max_estimator']:.0f} ms vs "
        f"{f['step_ms_max_session']:.0f} ms.",
        f"- a checkpoint save takes {f['checkpoint_seconds']:.2f} s: "
        f"{f['checkpoint_seconds'] / f['save_checkpoints_secs']:.3%} of {f['save_checkpoints_secs']} s.",
        f"- from the last step to `Estimator.train` returning (final checkpoint, hooks' end, closing the session): up "
        f"to {f['end_of_training_seconds_max']:.2f} s in this run; paid once per training cycle, not counted above.",
    ]


def _row_evaluation(f: dict) -> list:
    return [
        f"A whole `Estimator.evaluate` of a checkpoint of the `default` set ({f['model']}, {f['image_size']}x"
        f"{f['image_size']}, batch {f['batch_size']}, {f['classes']} classes) over the benchmark records, as the "
        "run loop runs it after a training cycle: with the evaluation report (the confusion matrix and the 16 "
        "most confident mistakes streamed with the other metrics, then the two images drawn with matplotlib, the "
        "summaries and the JSON written) against the same evaluation with the report's metrics left out of the "
        "EstimatorSpec. One untimed evaluation with the report comes first: matplotlib's import (~0.5 s) is paid "
        "once per process. (In training the images are drawn in a thread of their own while training goes on, "
        "row 7; here, as `--mode evaluate` does, before the evaluation returns.)",
        "",
        f"- {f['seconds_with_report']:.2f} s with the report, {f['seconds_without']:.2f} s without "
        f"(ratio {f['time_ratio']:.3f}); CPU time {f['cpu_seconds_with_report']:.1f} s vs "
        f"{f['cpu_seconds_without']:.1f} s (median of every round, disturbed ones included).",
    ]


def _row_recalibration(f: dict) -> list:
    return [
        f"The `default` set fine-tuned (`--fine_tuning`, {f['model']}, {f['image_size']}x{f['image_size']}): a "
        "checkpoint evaluated as the run loop evaluates it at the end of a training cycle (graphs and sessions built "
        "once, by a first evaluation left out of the timing; the report included), with batch-norm recalibration "
        f"first ({f['batches']} batches of {f['train_batch_size']} training images through the training graph, the "
        "recalibrated checkpoint written, then evaluated) against the evaluation of the checkpoint as trained "
        f"(evaluation batch {f['eval_batch_size']}).",
        "",
        f"- {f['seconds_recalibrated']:.2f} s with recalibration (of which {f['seconds_recalibration']:.2f} s "
        f"recalibrating), {f['seconds_alone']:.2f} s alone (ratio {f['time_ratio']:.3f}). The recalibration's part "
        "grows with its batch count, not with the evaluation data.",
    ]


def _row_cycles(f: dict) -> list:
    return [
        f"`run.py` training {f['epochs']} epochs of {f['training_images']} images (small_cnn trained end to end, "
        f"{f['image_size']}x{f['image_size']}, batch {f['batch_size']}), evaluating its {f['test_images']} test "
        "images after every epoch, against the same run evaluating once at the end: whole `run.main` calls in the "
        "suite's process, graph building included, after one untimed run that loads what later runs reuse "
        "(matplotlib, the network's module spec). "
        "The target is measured with batch-norm recalibration off, as the issue that set it measured it (the "
        "recalibration did not exist yet); one round with it on, as fine-tuning runs by default, is the reference. "
        "Timestamps of every training step and of every evaluation (recalibration included) give the idle wall "
        "time between cycles.",
        "",
        f"- recalibration off: {f['seconds_every_epoch']:.1f} s evaluating every epoch, {f['seconds_once']:.1f} s "
        f"once (ratio {f['time_ratio']:.2f}).",
        f"- recalibration on: {f['seconds_every_epoch_recalibrated']:.1f} s vs {f['seconds_once_recalibrated']:.1f} s "
        f"(ratio {f['time_ratio_recalibrated']:.2f}).",
        f"- from a cycle's last training step to its evaluation: median "
        f"{f['train_to_eval_median_every_epoch']:.2f} s, at most {f['train_to_eval_max_every_epoch']:.2f} s; from the "
        f"evaluation's end to the next cycle's first step: median {f['eval_to_train_median_every_epoch']:.2f} s. "
        f"The run evaluating once: {f['train_to_eval_max_once']:.2f} s from its last step to its evaluation.",
    ]


def _row_feature_cache(f: dict) -> list:
    return [
        "Head-only training (the `default` set: the frozen, pretrained EfficientNet-Lite0, only the head trains; "
        "on the cycles row's small set) with `cache_features` against without, same epochs and seed, one "
        "evaluation at the end. An epoch's time comes "
        "from the training steps' timestamps (graph building left out); the caching pass (training and evaluation "
        "features, written before training) is timed apart.",
        "",
        f"- an epoch: {f['epoch_seconds_uncached']:.2f} s uncached, {f['epoch_seconds_cached']:.3f} s cached "
        f"({f['speedup']:.1f}x).",
        f"- the caching pass: {f['caching_seconds']:.1f} s, {f['caching_vs_uncached_epoch']:.2f} uncached epochs.",
        f"- accuracy at the end: {f['accuracy_uncached']:.2%} uncached, {f['accuracy_cached']:.2%} cached "
        "(generated images of two photographs: the figure that matters is on real photos, see the README).",
    ]


def _row_pretrained_caching(f: dict) -> list:
    return [
        f"`cached_features.write_cache` over {f['images']} benchmark images (two training shards) at "
        f"{f['image_size']}x{f['image_size']}, batches of {f['batch_size']}, against a bare `tf.compat.v1.Session` "
        "running the same frozen module on the same decoded and cropped batches held in memory (fed batch by "
        "batch): the network's own speed, which the pass cannot beat. Both rates are steady-state, from the end "
        "of the first batch to the end of the last.",
        "",
        f"- caching pass: {f['images_per_sec_caching']:.1f} images/s; bare Session: {f['images_per_sec_bare']:.1f} "
        f"images/s ({f['ratio']:.2f}).",
        f"- the whole pass took {f['caching_seconds']:.1f} s, of which {f['first_batch_seconds']:.1f} s until its "
        "first batch was written (building the graph, loading the weights, the first batch).",
    ]


def _row_fine_tuning(f: dict) -> list:
    return [
        "The documented fine-tuning recipe (`--hyperparameter_set mobilenet`: the module trained with the head, its "
        f"batch norm frozen) on {f['model']} at {f['image_size']}x{f['image_size']}, batch {f['batch_size']}, its "
        "fine-tuning phase alone (`--head_epochs 0`: a head phase changes where the weights start, not a step): "
        "`run.py` as a user runs it (`run.main` in the suite's process: the run loop's hooks, the cycles hook, the "
        "progress bar, summaries and checkpoints), its steps timed by a hook, against row 3's bare Session loop "
        f"running only the train_op over the same `input_fn`; steady state over {f['timed_steps']} steps after "
        f"{f['warmup_steps']} (the step-0 checkpoint and summary, and the evaluation at the end, fall outside).",
        "",
        f"- {f['steps_per_sec_run_py']:.2f} vs {f['steps_per_sec_session']:.2f} steps/s; the Session loop's median "
        f"step {f['step_ms_median_session']:.0f} ms.",
    ]


ROW_TEXT = {
    "conversion": _row_conversion,
    "input_pipeline": _row_input,
    "training": _row_training,
    "framework_overhead": _row_overhead,
    "evaluation": _row_evaluation,
    "recalibration": _row_recalibration,
    "cycles": _row_cycles,
    "feature_cache": _row_feature_cache,
    "pretrained_caching": _row_pretrained_caching,
    "fine_tuning": _row_fine_tuning,
}

# What profiling found, per row, shown with the row; "not_met" only when one of its targets is missed.
# Measured while writing the suite (2 cores, quiet machine); the figures of each run are in the lines above.
FINDINGS = {
    "conversion": {
        "always": (
            "What keeps the speedup under 2x: the converter's main process (listing the folder, serializing each "
            "record, writing the shards) runs beside the workers on the same cores, and starting the worker "
            "processes is a fixed cost of every run. Memory stays flat because files stream from the walk through "
            "a few tasks a worker to the shard writers."
        ),
        "not_met": (
            "On a quiet machine this suite measured 1.83-1.92x while it was written, so a figure below the "
            "target is first a question for the noise column (another process on one of the 2 cores takes "
            "most of the second worker's share)."
        ),
    },
    "input_pipeline": {
        "always": (
            "Tried while writing the suite: a shuffle buffer smaller than the 2,000 records (512, 64; the default "
            "2048 refills whole every epoch) changed the pipeline's rate by under 2%. "
            "A faster per-image kernel (issue 15, target 1.15x the kernel ceiling with test accuracy within 0.5 "
            "point): measured by hand with `in_memory_rate` over flowers_small's 800 training JPEGs (stored at a "
            "192 px longer edge), batch 64, 3-7 alternating rounds at 224 and 96 px, wall and CPU time, on the 2 "
            "cores shared with other work (load 2.3-6.3; two kernels doing the current one's exact work scored "
            "0.93-1.16x, so single differences under ~15% are noise). Medians against the current kernel "
            "(bilinear resize to float32): nearest-neighbour resize 0.79-0.89x as float32 and 0.82-1.00x kept as "
            "uint8 (slower, not the 1.37x an earlier run under heavier load suggested); area resize 1.09-1.13x at "
            "224 px (1.11-1.14x for the evaluation crop) and 0.87-1.10x at 96 px; uint8 output (rounded) "
            "0.72-0.76x at 224 px and 1.03-1.07x at 96 px; `resize_bilinear(half_pixel_centers=True)` is the "
            "same op (0.94-1.06x); in an earlier run at 224 px (load 5-6) `dct_method='INTEGER_FAST'` gave 1.01x, "
            "`fancy_upscaling=False` 1.02x and both 0.95x; `decode_and_crop_jpeg(ratio=2)` applies to no window (a crop would need a "
            "shorter side of twice the output size: never with images stored at 192 px). The bound: dropping "
            "the resize altogether gives 3.1x at 224 px (the crops are upsampled, and resizing and stacking "
            "float32 images is two thirds of the kernel) but only 1.37x at 96 px, where decoding the crop is "
            "three quarters of it. So no option reaches 1.15x at both sizes and none was adopted; the test "
            "accuracy of three of them (small_cnn from scratch, 96 px, 15 epochs, seeds 0-2: current 64.3%, "
            "uint8 65.2%, nearest 65.2%, area 63.2%) cannot resolve half a point (seeds alone move a run by 3-5 "
            "points). On this CPU the kernel is not what limits training either: the flowers set trains at "
            "170-300 images/s against a kernel ceiling near 4,000 at 96 px. Where input speed matters (a GPU "
            "waiting for a CPU pipeline), converting with a `--max_edge` near the training size keeps the "
            "decode small, and `cache_features` removes the per-epoch image work of a frozen module."
        ),
        "not_met": (
            "First check the noise column. Then rerun `run.py --mode benchmark_input` with fixed `--num_parallel_calls` "
            "and `--cycle_length` values: a rate that rises with them means too little parallelism, one that does "
            "not means the pipeline's own work (reading, parsing, shuffling, batching) grew."
        ),
    },
    "training": {
        "always": (
            "The model never waits for its batch (IteratorGetNext stays near 0.1 ms a step), so the input is not a "
            "bottleneck in the tf.data sense. What the ratio measures on a CPU-only machine is CPU sharing: the "
            "per-op timing shows the whole difference in the convolutions, which run slower while the input "
            "pipeline's threads use the same 2 cores (the model's ops run one after another, each split over both "
            "cores, so a core taken by the input stalls the step). The input's work per step is about the same in "
            "both configurations; end to end it is a few percent of a step, head only over a tenth."
        ),
        "not_met": (
            "Both lines lose to the same cause, in proportion to how light the step is. End to end, the input's "
            "work is a few percent of a step (see the expected ratio above); runs made while writing the suite "
            "measured 0.93-0.98 with 30 timed steps, so a miss of a point or two there is within the noise of one "
            "run. The head-only step (fine_tuning False as the `default` set: the frozen small CNN module run "
            "forward only) is so light that the input's CPU time is over a tenth of it. Tried while writing the "
            "suite, head only, 60 timed steps, alternating real / cached rounds (ratio range, rounds): the "
            "defaults 0.82-0.86 (9, median 0.84); tf.data `threading.private_threadpool_size` 2: 0.83-0.91 (9, "
            "median 0.86), 1: 0.81-0.84 (5); `threading.max_intra_op_parallelism` 1: 0.83-0.86 (2); "
            "`autotune.cpu_budget` 1: 0.84-0.86 (3); `num_parallel_calls` 1: 0.82-0.84 (2); Session "
            "`intra_op_parallelism_threads` 1: 0.82-0.83 (2), `inter_op_parallelism_threads` 1: 0.83-0.86 (2). At "
            "most a couple of percent, none near 0.95. What meets it is a step that is heavier per image "
            "(training the small CNN end to end, or a larger network), cheaper preprocessing per image, or an "
            "accelerator for the model, which leaves the host's cores to the input."
        ),
    },
    "cycles": {
        "always": (
            "Before issue 15 the same comparison measured 2.07x: every cycle ended its `Estimator.train` call (a "
            "final checkpoint, closing the session, waiting for tf.data's autotuning thread: 20 s once, after a "
            "20 s cycle), then built a recalibration graph and an evaluation graph (`Estimator.evaluate`), each "
            "with a session and a restore, and a new training graph whose input refilled its shuffle buffer: 1-2 s "
            "from a cycle's last step to its evaluation and 2-4 s from the evaluation to the next step on this "
            "machine under load. Now autotuning is off, every cycle runs in one training session, the "
            "recalibration and evaluation graphs are built once per run, the evaluation input is restarted and "
            "the report's images (~0.2 s of matplotlib) are drawn in threads of their own while training goes on "
            "(library/cycle_evaluation.py), so those waits are hundredths of a second. What remains is work: the "
            "test images through the model, the report's figures, and with recalibration on, at most one pass of "
            "the training images through the training graph (here 12 batches of 16: about the forward work of an "
            "epoch of training on a set this small)."
        ),
        "not_met": (
            "The remaining cost is the work of each evaluation, not waiting (see the gaps above); on 2 shared "
            "cores a single round varies by 10-20% (by hand, three warm rounds in a row gave 1.13, 1.05 and "
            "1.30), so first check the noise column."
        ),
    },
    "feature_cache": {
        "always": (
            "Accuracy on real photos, measured by hand with `benchmarks/feature_cache_study.sh` (flowers_small: 5 "
            "classes, 800 training and 200 test photos at 192 px; a frozen small_cnn module of our own, trained 15 "
            "epochs from scratch on the same photos at 96x96, 65.5% test accuracy, exported with `--mode "
            "export_hub`; head only, 10 epochs, the `default` hyperparameters, seeds 0-9; one test photo is 0.5 "
            "point): test accuracy 62.15% uncached (57.5-65.0), 63.00% with `cache_features` (centre crops, "
            "60.5-64.5), 62.45% with `cached_views: 4` (60.5-66.0). Paired by seed, cached minus uncached +0.85 "
            "points (standard error 0.68), `cached_views: 4` minus uncached +0.30 (0.44): both within a point of "
            "the uncached runs, and the spread between seeds (2.2 points uncached) is larger than either "
            "difference. Whole runs (start-up, the caching pass and the evaluation included) took 21-25 s "
            "uncached, 9-12 s cached and 14-16 s with 4 views, on the 2 cores shared with other work."
        ),
        "not_met": (
            "An epoch of cached features is a few milliseconds of dense-layer work, so the ratio is large and "
            "noisy rather than small; a figure under 10x means the cached epoch's time was dominated by something "
            "other than the head (check the noise column: another process on the cores)."
        ),
    },
    "framework_overhead": {
        "always": (
            "Noticed, not counted: closing the session at the end of `Estimator.train` can take seconds to a "
            "minute. A native stack taken with gdb during the wait shows the tf.data iterator's destructor "
            "waiting for the autotuning thread (`Model::OptimizeLoop`) to leave a timed wait, whose period "
            "doubles while the iterator runs (up to 60 s in TensorFlow's source). Measured with the training "
            "input in a bare Session: closing after 5-20 s of training took 0.01-0.5 s, after 45 s once 37 s; "
            "with `tf.data.Options().autotune.enabled = False` on the same dataset it took 0.02 s (three times, "
            "45 s each) at an unchanged ~10 steps/s. It happened with the cached batch too while it was "
            "autotuned, so it is TensorFlow's, not the pipeline's; the run loop pays it whenever an "
            "`Estimator.train` call ends (every training cycle), and likely after each evaluation, whose input "
            "is autotuned as well."
        ),
        "not_met": (
            "The same loop's step time varies by 3-4% from one graph and session to the next on this machine: "
            "four alternating rounds made while writing the suite gave single-round ratios of 0.95, 1.02, 0.94 "
            "and 1.03, so a median a little under 0.95 is within that noise (the spread column). Beyond it, "
            "compare the median and slowest steps: a higher median means per-step hook work (the hooks fetch "
            "the loss and the global step every step), a slower maximum the periodic summary (3 images and 5 "
            "scalars)."
        ),
    },
}


def row_text(row: dict) -> str:
    """The markdown body of one row's section."""
    lines = ROW_TEXT[row["id"]](row["figures"])
    findings = FINDINGS.get(row["id"], {})
    if findings.get("always"):
        lines += ["", findings["always"]]
    if any(goal["met"] is False for goal in row["targets"]) and findings.get("not_met"):
        lines += ["", "**Not met: why, and what was tried.** " + findings["not_met"]]
    return "\n".join(lines)


# Not a row of the suite (it needs real photos and minutes of training): measured by hand with
# `python -m benchmarks.batch_norm_study`, kept here so that every RESULTS.md carries it.
BATCH_NORM_STUDY = """## Batch-norm statistics: where the train/eval gap comes from

Measured by hand, not by `make bench` (it needs the real photos of `../shared/data/flowers_small`
and minutes of training): small_cnn from scratch at 96x96 (`run.py --config_set flowers`: the
`scratch` hyperparameters, lr 3e-3 Adam, batch 32, batch-norm momentum 0.9, training crops
covering 8-100% of the image (`min_crop_area` 0.08) with flips, evaluation on the central 87.5%),
800 training and 200 test photos of 5 classes, 30 epochs, a checkpoint every 5; 2-core Xeon VM
shared with other work. `python -m benchmarks.batch_norm_study --config_set flowers CHECKPOINT...`
evaluates each checkpoint's weights four ways, on the test photos and on the training photos
preprocessed like evaluation:

- **moving**: evaluation as it was, with the checkpoint's moving averages;
- **batch**: the training graph, normalizing each batch of 32 by its own statistics;
- **recalibrated**: population statistics of 20 batches of 32 training photos preprocessed like
  evaluation (what `batch_norm_recalibration_batches` does);
- **recal. train crops**: the same population statistics, of training crops and flips instead.

Test accuracy (seed 0; 200 photos, so one photo is 0.5 points):

| step | moving | batch | recalibrated | recal. train crops |
| --- | --- | --- | --- | --- |
| 125 | 62.5% | 63.0% | 60.0% | 60.5% |
| 250 | 57.0% | 64.5% | 62.0% | 61.5% |
| 375 | 62.5% | 64.5% | 66.5% | 64.0% |
| 500 | 58.5% | 65.0% | 66.0% | 65.0% |
| 625 | 60.5% | 68.5% | 66.5% | 66.5% |
| 750 | 63.5% | 71.0% | 69.5% | 68.5% |
| mean | 60.8% | 66.1% | 65.1% | 64.3% |

Training photos, evaluation preprocessing (the "train/eval gap" on the same images):

| step | moving | batch (training graph) | recalibrated |
| --- | --- | --- | --- |
| 125 | 58.9% | 61.3% | 64.2% |
| 250 | 58.9% | 66.2% | 67.8% |
| 375 | 62.9% | 67.8% | 70.4% |
| 500 | 57.9% | 69.6% | 73.0% |
| 625 | 62.0% | 72.8% | 74.8% |
| 750 | 68.4% | 72.9% | 77.5% |

Test accuracy, seed 1 (a second run of the same command):

| step | moving | batch | recalibrated | recal. train crops |
| --- | --- | --- | --- | --- |
| 125 | 49.5% | 59.5% | 59.0% | 58.5% |
| 250 | 55.0% | 64.0% | 63.5% | 64.0% |
| 375 | 58.5% | 65.0% | 66.0% | 65.5% |
| 500 | 61.5% | 66.0% | 66.5% | 68.5% |
| 625 | 64.0% | 72.0% | 68.5% | 70.0% |
| 750 | 67.5% | 70.5% | 69.0% | 72.5% |
| mean | 59.3% | 66.2% | 65.4% | 66.5% |

What the gap (batch minus moving: 5.3 and 6.9 points on average on the test photos, up to 11.7 on
the training photos) is made of:

- **Momentum and number of updates: nearly all of it.** With the same images and crops the moving
  averages saw (recal. train crops vs moving), replacing the exponential average by true
  population statistics of the same weights gains 3.6 points on average with seed 0 (up to 6.5)
  and 7.2 with seed 1 (5 to 9). At momentum 0.9 the averages remember about the last 10-20
  batches, taken while the weights still move fast (lr 3e-3 from scratch), so they describe the
  weights of earlier steps, through a few hundred crops.
- **Training crops vs evaluation's central crop: no consistent effect here** (recalibrated vs
  recal. train crops: +0.75 points on average with seed 0, -1.1 with seed 1, each between -3.5 and
  +2.5: within the noise of 200 photos). At 96 px the 8-100% crops do not shift the activations'
  statistics enough to matter; recalibration uses evaluation's preprocessing, the right
  distribution by construction, and would do as well on training crops for this network.
- **Batch size.** At step 750, batches of 8 / 32 / 128 images give the training graph 66.0 / 71.0 /
  69.5% on the test photos (small batches' statistics are noisy), while recalibration over 20 such
  batches (160 / 640 / 2,560 images) gives 71.0 / 69.5 / 68.5%: within the noise of 200 test
  photos. The number of batches: 1 / 5 / 20 / 50 batches of 32 give 67.5 / 69.0 / 69.5 / 69.0% (test)
  and 70.1 / 77.8 / 77.5 / 77.5% (training photos): from 5 batches on it no longer matters; the
  default of 20 keeps a margin for larger and less uniform data.
- **The rest, batch vs recalibrated (about a point):** the test batches normalized by their own
  statistics adapt to the test photos, which population statistics of training photos cannot.

On the training photos preprocessed like evaluation, the recalibrated evaluation is at or above
the training graph at every checkpoint of both runs (the training graph's dropout is off here,
its batch statistics on); without recalibration it was up to 11.7 points below.

Wiring checked, no fault found: the batch-norm UPDATE_OPS run with every training step (the train
op depends on them; the hub module's `train` variant brings its updates into UPDATE_OPS, and the
moving averages in the checkpoints move); the moving variance receives the unbiased (n/(n-1))
batch variance that `fused_batch_norm` returns in training, the right estimate of a population
variance (`tests/library/test_batch_norm_recalibration.py` checks it against numpy; the factor is
below 1.0001 for every layer here); the evaluation graph normalizes by the moving averages (the
module's default variant runs batch norm with `is_training=False`, and replacing the averages
changes evaluation's accuracy as the tables show)."""
