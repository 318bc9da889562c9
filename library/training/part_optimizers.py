"""One optimizer per part of a model's variables, applied as one training step.

Fine-tuning a pretrained network under a new head wants a smaller learning rate for the
network than for the head. Scaling the network's gradients does not do that with Adam (its
steps do not depend on the gradients' scale), so each part gets an optimizer of its own:
:class:`PartOptimizers` computes the gradients once, hands each part's pairs to its optimizer
and increments the global step once. It is a ``tf.compat.v1.train.Optimizer``, so whatever
wraps one (tower replication's ``compute_gradients`` / ``apply_gradients``, mixed precision's
loss scaling) wraps it too.
"""

from library.tensorflow_env import import_tensorflow

tf = import_tensorflow()
v1 = tf.compat.v1


class PartOptimizers(v1.train.Optimizer):
    """``parts``: {variable-name prefix: optimizer}; a variable belongs to its longest matching prefix, and ``""``
    takes the variables no other prefix matches."""

    def __init__(self, parts: dict, name: str = "PartOptimizers"):
        super().__init__(use_locking=False, name=name)
        self._parts = dict(sorted(parts.items(), key=lambda item: -len(item[0])))  # longest prefix first

    def part_of(self, variable) -> str:
        """The prefix of the part ``variable`` belongs to; ValueError when none matches."""
        name = variable.op.name
        for prefix in self._parts:
            if name.startswith(prefix):
                return prefix
        raise ValueError(f"variable {name} is in no part of the optimizer ({', '.join(self._parts)})")

    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        """Each part's gradients applied by its optimizer, then ``global_step`` incremented once."""
        by_part = {}
        for gradient, variable in grads_and_vars:
            by_part.setdefault(self.part_of(variable), []).append((gradient, variable))
        updates = [self._parts[prefix].apply_gradients(pairs) for prefix, pairs in by_part.items()]
        if global_step is None:
            return tf.group(*updates, name=name or self.get_name())
        with tf.control_dependencies(updates), v1.colocate_with(global_step):
            return v1.assign_add(global_step, 1, name=name or self.get_name()).op
