"""Fine-tuning a pretrained module without wrecking what it knows: the head first, then the whole network.

A new head starts random, and its large gradients, passed back into the module, distort the
pretrained features before the head is any good (Kumar et al., ICLR 2022, "Fine-Tuning can
Distort Pretrained Features and Underperform Out-of-Distribution"; their fix is LP-FT, a linear
probe, then fine-tuning). So with ``fine_tuning`` and ``head_epochs`` K > 0 a training run has two
phases (``library/training/phases.py``):

1. ``head``: K epochs of the head alone on the frozen module's cached features
   (``project/cached_features.py``: a fraction of a second an epoch once the features are cached),
   at ``head_learning_rate``, evaluated once at its end, in ``model_dir/head``;
2. ``fine_tuning``: ``train_epochs`` epochs of the whole network, module and head, starting from
   that head, with the run's own options, in model_dir.

While fine-tuning, the module's batch norm (``fine_tuning_batch_norm``) keeps its stored
statistics by default (``frozen``: the module's inference graph with trainable weights, as Keras'
transfer-learning guide advises for small data sets; nothing to recalibrate) or runs on batch
statistics (``train``: the module's ``train`` graph, moving averages updated and recalibrated
before each evaluation), which a network from random weights needs. The module's learning rate
may be a fraction of the head's (``module_learning_rate_multiplier``, ``project/model_fn.py``).
"""

from library.experiment import Phase

HEAD_PHASE = "head"
FINE_TUNING_PHASE = "fine_tuning"
FROZEN, TRAIN = "frozen", "train"


def phases(values: dict) -> tuple:
    """The head phase and the fine-tuning phase of a run with these option values; none unless it asks for them."""
    if not (values["fine_tuning"] and values["head_epochs"]):
        return ()
    epochs = values["head_epochs"]
    head = Phase(HEAD_PHASE, {
        "fine_tuning": False, "cache_features": True, "head_epochs": 0, "train_epochs": epochs,
        "epochs_between_evals": epochs, "learning_rate": values["head_learning_rate"],
        "learning_rate_warmup_epochs": 0.0, "batch_norm_recalibration_batches": 0,
    }, f"{epochs} epochs of the head alone on the frozen module's cached features, evaluated at the end")
    network = Phase(FINE_TUNING_PHASE, {}, f"{values['train_epochs']} epochs of the whole network from that head")
    return head, network


def batch_norm_mode(values: dict, random_weights: bool) -> str:
    """``fine_tuning_batch_norm`` as set, or by default frozen for a pretrained module and train for random weights;
    ValueError (one line) for frozen statistics of random weights."""
    mode = values["fine_tuning_batch_norm"]
    if mode is None:
        return TRAIN if random_weights else FROZEN
    if mode == FROZEN and random_weights and values["fine_tuning"]:
        raise ValueError(f"fine_tuning_batch_norm frozen: hub_module {values['hub_module']} starts from random "
                         "weights, whose stored batch-norm statistics mean nothing; use train (or leave it null)")
    return mode
