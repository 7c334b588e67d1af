"""Discriminative learning rates: one learning-rate multiplier per layer group, for any optimizer.

    rates = layer_rate_multipliers(model, decay=0.7)          # {"stem": 0.24, ..., "stage3": 0.7, "head": 1.0}
    optimizer = with_layer_rates(keras.optimizers.AdamW(1e-3), model, decay=0.7)
    model.compile(optimizer=optimizer, ...)                   # saves and loads as .keras

A model `inputs -> backbone -> head` splits into groups, bottom to top: `"stem"` (backbone
layers before its first block, if any), the backbone's blocks in order (the names of
`headstart.models.freezing.block_names`: `stage1`, `block5`, `conv4`, ...; a layer with no block name
joins the block before it) and `"head"`. Layer-wise decay (timm's `layer_decay`) gives the
head 1 and each group below `decay` times the one above; explicit `groups` (`{"block5": 0.1,
"head": 1.0}`, `"backbone"` for every backbone group) set or override multipliers; a group
not named keeps 1, the base rate.

How the step is scaled, and why this way:
- Every Keras optimizer updates one variable in `update_step(gradient, variable,
  learning_rate)`, and for SGD (plain, momentum, Nesterov), Adagrad, RMSprop, Adadelta,
  Adam, AdamW, Adamax, Nadam and Lion the step is proportional to `learning_rate`. Scaling
  the rate passed per variable therefore scales the step exactly, where scaling gradients
  would not: Adam's step is invariant to the gradient's scale. Ftrl and Adafactor use the
  rate non-linearly and are refused.
- Decoupled weight decay (`weight_decay`, AdamW's) is `variable -= variable * wd * lr` with
  the optimizer's global rate. Here it uses the group's rate, as PyTorch/timm parameter
  groups do (their decay is `lr_group * wd`): a group at multiplier 0 (a block not yet
  unfrozen by `headstart.callbacks.GradualUnfreezing`) neither moves nor shrinks.
- The multipliers live in non-trainable variables, one per group, so they change between
  epochs (or batches) without retracing or recompiling: gradual unfreezing is setting them.
  They are optimizer variables, so checkpoints (`BackupAndRestore`, `.keras`) carry their
  current values; the config carries the target multipliers.
- `LayerRateOptimizer` wraps the optimizer, as Keras' `LossScaleOptimizer` does, rather than
  subclassing each optimizer class: one registered class serializes any wrapped optimizer.
  Keras' `MultiOptimizer` (one optimizer per variable group) would also give per-group
  rates, but with separate step counters and a learning-rate schedule copied per group.
"""

import difflib
import math

import keras
from keras import ops

from headstart.models.freezing import _BLOCK, _is_automatic_name

STEM = "stem"
HEAD = "head"
BACKBONE = "backbone"   # in `groups`: every backbone group at once

# Optimizers whose step is not proportional to the learning rate: a multiplier would not scale it.
NONLINEAR_OPTIMIZERS = ("Ftrl", "Adafactor", "LossScaleOptimizer")


def backbone_groups(backbone):
    """The backbone's layers by group, bottom to top: `{"stem": [...], "stage1": [...], ...}`.

    A layer whose name starts a block (`stage2_block1_conv` -> `stage2`) opens or joins that
    block; a layer named automatically by Keras or with no number in its name joins the
    group before it; layers before the first block form `"stem"`.
    """
    groups = {}
    current = STEM
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        match = _BLOCK.match(layer.name)
        if match is not None and not _is_automatic_name(layer):
            current = match["block"]
        groups.setdefault(current, []).append(layer)
    return groups


def layer_groups(model):
    """The model's variables by group, bottom to top, `"head"` last: `{group: [variable, ...]}`.

    Every variable of the model is in exactly one group (trainable or not). Layers of the
    outer model other than `backbone` (its input layer, a preprocessing layer) join
    `"head"` if they have weights.

    Raises:
        ValueError: the model has no `backbone` and `head` sub-models.
    """
    try:
        backbone, head = model.get_layer(BACKBONE), model.get_layer(HEAD)
    except ValueError:
        raise ValueError("Layer rates need a model with `backbone` and `head` sub-models "
                         f"(models.heads.assemble). Received: model={model.name!r} with layers "
                         f"{[layer.name for layer in model.layers]}") from None
    groups = {name: [weight for layer in group for weight in layer.weights]
              for name, group in backbone_groups(backbone).items()}
    groups = {name: weights for name, weights in groups.items() if weights}
    groups[HEAD] = list(head.weights)
    for layer in model.layers:
        if layer is not backbone and layer is not head:
            groups[HEAD].extend(layer.weights)
    return groups


def group_names(model):
    """The model's group names, bottom to top: `["stem", "stage1", "stage2", "stage3", "head"]`."""
    return list(layer_groups(model))


def layer_rate_multipliers(model, decay=None, groups=None):
    """Each group's learning-rate multiplier, bottom to top, `"head"` last.

    Args:
        model: a model with `backbone` and `head` sub-models.
        decay: layer-wise decay in (0, 1]: the head gets 1 and each group below `decay`
            times the one above (timm's `layer_decay`). Defaults to `None` (all 1).
        groups: `{group: multiplier}` overriding the above; `"backbone"` sets every backbone
            group, a named group overrides it. Multipliers must be positive. Defaults to `None`.

    Returns:
        `{group: multiplier}` for every group of the model.

    Raises:
        ValueError: `decay` outside (0, 1], an unknown group name (the message lists the
            model's groups), or a multiplier that is not a positive number.

    Example:
        >>> layer_rate_multipliers(models.create_model("resnet8"), decay=0.5)
        {'stem': 0.0625, 'stage1': 0.125, 'stage2': 0.25, 'stage3': 0.5, 'head': 1.0}
    """
    names = group_names(model)
    check_decay(decay)
    check_groups(groups, names)
    backbone_names = names[:-1]
    multipliers = {}
    for name in backbone_names:
        depth = len(backbone_names) - backbone_names.index(name)   # groups below the head
        multipliers[name] = float(decay) ** depth if decay is not None else 1.0
    multipliers[HEAD] = 1.0
    groups = dict(groups or {})
    if BACKBONE in groups:
        backbone_multiplier = float(groups.pop(BACKBONE))
        multipliers.update({name: backbone_multiplier for name in backbone_names})
    multipliers.update({name: float(value) for name, value in groups.items()})
    return multipliers


def check_decay(decay):
    if decay is None:
        return None
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay <= 1:
        raise ValueError("`decay` must be a number in (0, 1]: each group below the head gets `decay` times "
                         f"the rate of the group above. Received: decay={decay!r}")
    return float(decay)


def check_groups(groups, names):
    """Raise `ValueError` for an unknown group name or a multiplier that is not a positive number."""
    for name, value in (groups or {}).items():
        if name not in names and name != BACKBONE:
            close = difflib.get_close_matches(str(name), names + [BACKBONE], n=3)
            hint = f"Did you mean {' or '.join(close)}? " if close else ""
            raise ValueError(f"Unknown layer group {name!r}. {hint}The model's groups: {', '.join(names)} "
                             f"(or {BACKBONE!r} for all but the head). Received: groups={groups!r}")
        check_multiplier(value, name)


def check_multiplier(value, name="multiplier"):
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or value <= 0):
        raise ValueError(f"The multiplier of layer group {name!r} must be a positive number (to keep a "
                         f"group fixed, leave it frozen). Received: {name}={value!r}")
    return float(value)


def with_layer_rates(optimizer, model, *, decay=None, groups=None, multipliers=None):
    """Wrap `optimizer` so each layer group of `model` steps at its own multiple of the rate.

    Call it before `model.compile(optimizer=...)`, with the same model. Variables in no
    group (added to the model later) step at the base rate.

    Args:
        optimizer: an unbuilt Keras optimizer (SGD, RMSprop, Adagrad, Adam, AdamW, ...),
            with a float rate or a `LearningRateSchedule`.
        model: the model it will train, with `backbone` and `head` sub-models.
        decay: layer-wise decay, see `layer_rate_multipliers`. Defaults to `None`.
        groups: explicit multipliers, see `layer_rate_multipliers`. Defaults to `None`.
        multipliers: `{group: multiplier}` already computed by `layer_rate_multipliers`,
            instead of `decay` and `groups`. Defaults to `None`.

    Returns:
        A `LayerRateOptimizer`.

    Example:
        >>> optimizer = with_layer_rates(keras.optimizers.SGD(0.1), model, groups={"stage3": 0.1})
        >>> model.compile(optimizer=optimizer, loss="mse")
    """
    if multipliers is None:
        multipliers = layer_rate_multipliers(model, decay=decay, groups=groups)
    elif decay is not None or groups is not None:
        raise ValueError("Pass `multipliers`, or `decay` and/or `groups`, not both. "
                         f"Received: multipliers={multipliers!r}, decay={decay!r}, groups={groups!r}")
    variable_groups = {}
    for name, variables in layer_groups(model).items():
        for variable in variables:
            if variable.path in variable_groups:
                raise ValueError(f"Two variables of the model share the path {variable.path!r}; layer rates "
                                 "find variables by path, so rename one of their layers.")
            variable_groups[variable.path] = name
    return LayerRateOptimizer(optimizer, variable_groups=variable_groups, multipliers=multipliers)


@keras.saving.register_keras_serializable(package="headstart")
class LayerRateOptimizer(keras.optimizers.Optimizer):
    """An optimizer whose step for each variable is its group's multiplier times the inner one's.

    Build it with `with_layer_rates`. The inner optimizer keeps its learning rate (float or
    schedule), state and config; `learning_rate` and `iterations` are the inner optimizer's.
    `set_multiplier(group, value)` changes a group's live multiplier (0 holds the group still)
    without recompiling; `multipliers` are the target values from the config.

    Args:
        optimizer: the inner Keras optimizer (or its serialized config).
        variable_groups: `{variable path: group}`.
        multipliers: `{group: multiplier}`, bottom to top.
        name: Defaults to `"layer_rates"`.
    """

    def __init__(self, optimizer, variable_groups, multipliers, name=None):
        if isinstance(optimizer, dict):
            optimizer = keras.saving.deserialize_keras_object(optimizer)
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise ValueError(f"`optimizer` must be a Keras optimizer. Received: optimizer={optimizer!r}")
        if type(optimizer).__name__ in NONLINEAR_OPTIMIZERS:
            raise ValueError(f"{type(optimizer).__name__}'s step is not proportional to its learning rate, so a "
                             "multiplier would not scale it; use SGD, RMSprop, Adagrad, Adam or AdamW. "
                             f"Received: optimizer={optimizer.name!r}")
        if optimizer.built:
            raise ValueError("Wrap the optimizer before it is built (before `compile` and `fit`). "
                             f"Received: optimizer={optimizer.name!r}, already built")
        for group, value in multipliers.items():
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"Multipliers must be numbers >= 0. Received: {group}={value!r}")
        unknown = sorted(set(variable_groups.values()) - set(multipliers))
        if unknown:
            raise ValueError(f"Groups {unknown} have variables but no multiplier. Received: "
                             f"multipliers={multipliers!r}")
        super().__init__(learning_rate=0.0, name=name or "layer_rates")
        self.inner_optimizer = optimizer
        self.variable_groups = dict(variable_groups)
        self.multipliers = {group: float(value) for group, value in multipliers.items()}
        self._group_names = list(self.multipliers)
        # One scalar per group, created with the optimizer (under the strategy scope it is
        # created in), readable by the traced step and assignable from callbacks.
        self._multiplier_variables = []
        with keras.name_scope(self.name, caller=self):
            for index, (group, value) in enumerate(self.multipliers.items()):
                variable = keras.Variable(value, name=f"multiplier_{index}_{group}", dtype="float32",
                                          trainable=False, aggregation="only_first_replica")
                self._track_variable(variable)
                self._multiplier_variables.append(variable)
        self._group_index_by_key = {}
        # The inner optimizer does the whole `apply` (clipping, gradient accumulation, EMA,
        # tf.distribute); only its per-variable step and its weight decay change, so those
        # two methods are replaced on this instance.
        self._inner_update_step = optimizer.update_step
        optimizer.update_step = self._scaled_update_step
        optimizer._apply_weight_decay = _no_weight_decay

    def build(self, var_list):
        self._group_index_by_key = {}
        for variable in var_list:
            group = self.variable_groups.get(variable.path)
            if group is not None:
                key = self.inner_optimizer._var_key(variable)
                self._group_index_by_key[key] = self._group_names.index(group)
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
        self.inner_optimizer.apply(grads, trainable_variables)

    def _scaled_update_step(self, gradient, variable, learning_rate):
        index = self._group_index_by_key.get(self.inner_optimizer._var_key(variable))
        if index is not None:
            learning_rate = ops.multiply(ops.cast(learning_rate, variable.dtype),
                                         ops.cast(self._multiplier_variables[index], variable.dtype))
        inner = self.inner_optimizer
        if inner.weight_decay is not None and inner._use_weight_decay(variable):
            decay = ops.multiply(ops.cast(inner.weight_decay, variable.dtype),
                                 ops.cast(learning_rate, variable.dtype))
            inner.assign_sub(variable, ops.multiply(variable, decay))
        return self._inner_update_step(gradient, variable, learning_rate)

    # ## Live multipliers

    def set_multiplier(self, group, value):
        """Set `group`'s live multiplier (0 holds it still: no step, no weight decay)."""
        if group not in self._group_names:
            raise ValueError(f"Unknown layer group {group!r}. Groups: {', '.join(self._group_names)}")
        self._multiplier_variables[self._group_names.index(group)].assign(float(value))

    def current_multipliers(self):
        """`{group: live multiplier}`."""
        return {group: float(ops.convert_to_numpy(variable))
                for group, variable in zip(self._group_names, self._multiplier_variables)}

    def groups_of(self, variables):
        """The groups, in bottom-to-top order, that have at least one of `variables`."""
        present = {self.variable_groups.get(variable.path) for variable in variables}
        return [group for group in self._group_names if group in present]

    # ## Delegated to the inner optimizer

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        self.inner_optimizer.exclude_from_weight_decay(var_list=var_list, var_names=var_names)

    def get_config(self):
        return {
            "name": self.name,
            "optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "variable_groups": dict(self.variable_groups),
            "multipliers": dict(self.multipliers),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        optimizer = keras.saving.deserialize_keras_object(config.pop("optimizer"), custom_objects=custom_objects)
        return cls(optimizer, **config)


def _no_weight_decay(variables):
    """The inner optimizer's own decay, with the global rate, is replaced by the per-group one."""
    return None
