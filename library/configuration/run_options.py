"""Options of the generic run loop (``library.training.run_loop``), declared apart so --help needs no TensorFlow."""

from library.configuration.config import AT_LEAST_1, NON_NEGATIVE, Option, Range

MODES = ("train", "evaluate", "predict", "export", "export_hub", "export_tflite", "dry_run", "benchmark_input")
TFLITE_QUANTIZATIONS = ("none", "dynamic")  # of library.training.tflite_export.convert
DISTRIBUTIONS = ("none", "mirrored", "multi_worker", "parameter_server")

RUN_LOOP_OPTIONS = (
    Option("mode", str, "train", "what to do; dry_run builds the graph and input, runs one step and writes nothing; "
           "benchmark_input times the training input alone", choices=MODES),
    Option("hyperparameter_file", str, "hyperparameters.yaml", "file of hyperparameter sets, relative to the project file"),
    Option("hyperparameter_set", str, "default", "set of the hyperparameter file to use"),
    Option("model", str, "latest", "checkpoint for evaluate/predict/export: latest, best, or a checkpoint path"),
    Option("model_dir", str, "out/current/checkpoints", "checkpoints, TensorBoard events and config.yaml"),
    Option("best_model_dir", str, "out/current/best", "snapshot of the checkpoint with the lowest validation loss"),
    Option("train_batch_size", int, 32, "global training batch size (split across replicas)", valid=AT_LEAST_1),
    Option("train_epochs", int, 1, "epochs to train in total, counting earlier interrupted runs", valid=AT_LEAST_1),
    Option("epochs_between_evals", int, 1, "epochs trained between two evaluations", valid=AT_LEAST_1),
    Option("early_stopping_evaluations", int, 0, "end training (each phase of a phased run) when the evaluation loss "
           "has not beaten the best snapshot's for this many evaluations in a row; 0 = off", valid=NON_NEGATIVE),
    Option("random_seed", int, None, "seed for TensorFlow, numpy, Python and every shuffle; null: not reproducible",
           valid=Range(0, 2**32 - 1)),
    Option("xla", bool, False, "XLA JIT compilation for the session"),
    Option("save_checkpoints_secs", int, 600, "seconds between checkpoints within a cycle (one is always written at its end)",
           valid=AT_LEAST_1),
    Option("keep_checkpoint_max", int, 5, "recent checkpoints kept in model_dir; 0 keeps all", valid=NON_NEGATIVE),
    Option("export_best", bool, False, "also export each new best model as a SavedModel under best_model_dir/export"),
    Option("batch_norm_recalibration_batches", int, 20,
           "before each evaluation, batch-norm statistics recomputed over this many train_batch_size batches of "
           "training images preprocessed like evaluation (at most one pass over them), into the evaluated checkpoint; "
           "0 = off", valid=NON_NEGATIVE),
    Option("distribution", str, "none", "none, mirrored (local GPUs), multi_worker or parameter_server (TF_CONFIG)", choices=DISTRIBUTIONS),
    Option("num_gpus", int, None, "mirrored: GPUs to train on, default all; without a GPU, that many virtual CPU "
           "devices run the same code (a test aid)", valid=AT_LEAST_1),
    Option("report_file", str, None, "evaluate mode: also write the evaluation report (confusion matrix, per-class figures) as JSON here"),
    Option("export_dir", str, None, "export mode: directory for the SavedModel"),
    Option("output", str, None, "export_hub mode: directory for the hub module; export_tflite mode: the .tflite "
           "file (labels.txt is written beside it)"),
    Option("tflite_quantize", str, "none", "export_tflite mode: none (float32 weights) or dynamic (dynamic-range "
           "quantization: int8 weights, about 4x smaller)", choices=TFLITE_QUANTIZATIONS),
    Option("predict_input", str, None, "predict mode: a folder, a file pattern, or comma-separated input files"),
    Option("predictions_file", str, None, "predict mode: also write the predictions as CSV here"),
    Option("benchmark_batches", int, 200, "benchmark_input mode: batches timed, after a warm-up", valid=AT_LEAST_1),
)
