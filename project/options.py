"""Every option of this project, declared once: YAML key, command-line flag, type, default, help.

Options of ``project.yaml`` say how to run (data, directories, schedule, mode);
options of ``hyperparameters.yaml`` say what to train (network, optimizer, regularization).
``library.configuration.run_options.RUN_LOOP_OPTIONS`` holds the ones the generic run loop needs.
"""

from library.configuration.config import HYPERPARAMETER_FILE as HP
from library.configuration.config import AT_LEAST_1, FRACTION, NON_NEGATIVE, POSITIVE, PROBABILITY_BELOW_1, Option
from library.configuration.run_options import RUN_LOOP_OPTIONS
from project import networks

PROJECT_OPTIONS = (
    Option("train_data", str, None, "file pattern of the training TFRecords, e.g. dataset/train/train-*.tfrecord"),
    Option("eval_data", str, None, "file pattern of the evaluation TFRecords"),
    Option("labels_file", str, None, "labels.txt written by convert_dataset.py (class names, one a line)"),
    Option("eval_batch_size", int, 64, "evaluation and prediction batch size", valid=AT_LEAST_1),
    Option("shuffle_buffer", int, 2048, "records held in the training shuffle buffer", valid=AT_LEAST_1),
    Option("cycle_length", int, 8, "TFRecord files read at once by the interleave", valid=AT_LEAST_1),
    Option("num_parallel_calls", int, 0, "batches preprocessed in parallel (each 16 images at a time); 0 = one per CPU core",
           valid=NON_NEGATIVE),
    Option("top_k", int, 0, "predict mode: also give the K most probable classes of each image (0: only the most probable)",
           valid=NON_NEGATIVE),
    Option("tflite_input", str, "float32", "export_tflite mode: the model's input, one RGB image at the model's "
           "image size: float32 in [0, 1] or uint8 in [0, 255]", choices=("float32", "uint8")),
)

# The declared defaults are those of the `default` set of hyperparameters.yaml, which --help shows.
HYPERPARAMETER_OPTIONS = (
    Option("hub_module", str, "efficientnet_lite0",
           "feature extractor: a project network name (efficientnet_lite0: ImageNet weights; the others random) or "
           "a TF1 Hub module (path, file:// or URL)", HP),
    Option("hub_signature", str, None, "module signature giving the features; null: image_feature_vector if "
           "the module has it, else default", HP),
    Option("hub_output", str, None, "output of that signature; null: default", HP),
    Option("image_size", int, None, "input height and width of project networks and of modules of any size; "
           "null: a module's own size, else 224", HP, valid=AT_LEAST_1),
    Option("fine_tuning", bool, False, "train the module's variables too (False: train the head only)", HP),
    Option("cache_features", bool, True, "while the module is frozen (fine_tuning False), compute its features of "
           "every image once, beside model_dir, and train and evaluate the head on them (docs/feature-cache.md)", HP),
    Option("head_epochs", int, 0, "fine_tuning: first train the head alone this many epochs on the frozen module's "
           "cached features (in model_dir/head), then the whole network from that head for train_epochs; 0: from a "
           "new head at once", HP, valid=NON_NEGATIVE),
    Option("head_learning_rate", float, 1e-3, "head_epochs: the learning rate of those epochs", HP, valid=POSITIVE),
    Option("fine_tuning_batch_norm", str, None, "fine_tuning: the module's batch norm; frozen: its stored statistics "
           "(inference graph, trainable weights, nothing to recalibrate); train: batch statistics, moving averages "
           "updated and recalibrated before each evaluation; null: frozen for a pretrained module, train for one "
           "from random weights", HP, ("frozen", "train")),
    Option("module_learning_rate_multiplier", float, 1.0, "fine_tuning: the module's learning rate is the head's "
           "times this", HP, valid=POSITIVE),
    Option("learning_rate_warmup_epochs", float, 0.0, "learning rate rising linearly from 0 over this many epochs "
           "(then as learning_rate_schedule says); 0: none", HP, valid=NON_NEGATIVE),
    Option("learning_rate", float, 1e-3, "initial learning rate", HP, valid=POSITIVE),
    Option("learning_rate_schedule", str, "constant", "learning rate over training", HP, ("constant", "cosine", "exponential")),
    Option("learning_rate_decay", float, 0.94, "exponential schedule: factor applied per epoch", HP, valid=FRACTION),
    Option("optimizer", str, "Adam", "optimizer", HP, ("Adam", "Momentum", "SGD")),
    Option("momentum", float, 0.9, "Momentum optimizer: momentum", HP, valid=PROBABILITY_BELOW_1),
    Option("adam_beta1", float, 0.9, "Adam: exponential decay of the first moment", HP, valid=PROBABILITY_BELOW_1),
    Option("adam_beta2", float, 0.999, "Adam: exponential decay of the second moment", HP, valid=PROBABILITY_BELOW_1),
    Option("adam_epsilon", float, 1e-8, "Adam: numerical stability constant", HP, valid=POSITIVE),
    Option("dropout_rate", float, 0.2, "dropout before the classification layer (training only)", HP,
           valid=PROBABILITY_BELOW_1),
    Option("l2_regularization", float, 1e-8, "L2 weight decay on trainable weights", HP, valid=NON_NEGATIVE),
    Option("xentropy_label_smoothing", float, 0.0, "label smoothing of the softmax cross-entropy", HP,
           valid=PROBABILITY_BELOW_1),
    Option("random_flip", bool, True, "random horizontal flips in training", HP),
    Option("min_crop_area", float, 0.08, "smallest fraction of the image a training crop covers", HP, valid=FRACTION),
    Option("cached_views", int, 0, "cache_features: random training crops cached per image, one shown each epoch "
           "(0: the evaluation's centre crop, no augmentation)", HP, valid=NON_NEGATIVE),
    Option("eval_crop_fraction", float, 0.875, "fraction of the image kept by the evaluation central crop", HP,
           valid=FRACTION),
    Option("mixed_precision", bool, False, "float16 compute with loss scaling (GPU only; ignored on CPU)", HP),
)

# Each network declares the hyperparameters it reads beside it (project/networks/).
HYPERPARAMETER_OPTIONS += tuple(networks.OPTIONS)

OPTIONS = RUN_LOOP_OPTIONS + PROJECT_OPTIONS + HYPERPARAMETER_OPTIONS
