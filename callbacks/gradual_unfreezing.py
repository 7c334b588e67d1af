"""Gradual unfreezing: the backbone's blocks start training one after another, from the top down.

ULMFiT's schedule (Howard and Ruder 2018) with Lightning's `BackboneFinetuning` ramp: at the
phase's first epoch the top block joins the head, every `epochs_per_block` epochs the next
block below joins, and a block joins at `initial_scale` of its rate, which grows by `growth`
per epoch up to its full rate (the head's, or its layer-decay multiplier).

Why multipliers and not `layer.trainable`: Keras only sees a change of `trainable` after a
recompile, which cannot happen inside `fit`, would retrace the train step, and would
rebuild the optimizer's state. Here every block to be unfrozen is trainable from the
start and compiled once with `headstart.models.layer_rates.with_layer_rates`; a "frozen" block has
multiplier 0, so it neither steps nor decays (its gradients are still computed: the price
of no recompile). Batch-norm layers keep their policy: with the engine's `"frozen"` policy
they are non-trainable and stay in inference mode throughout. With `"train"`, those of
blocks not yet unfrozen still update their moving statistics.

The multipliers are a pure function of the epoch, set in `on_epoch_begin`, so a run
resumed by `keras.callbacks.BackupAndRestore` continues with the right blocks unfrozen.
"""

import keras

from headstart.models.layer_rates import HEAD, LayerRateOptimizer


class GradualUnfreezing(keras.callbacks.Callback):
    """Unfreeze the backbone block by block from the top, each ramping up to its full rate.

    Args:
        epochs_per_block: epochs between one block joining and the next. Defaults to `1`.
        schedule: instead, the epoch (counted from `start_epoch`, 0 = at once) at which each
            block joins, top block first: `[0, 2, 5]`. Blocks beyond the list stay frozen.
            Defaults to `None`.
        start_epoch: the `fit` epoch at which the schedule starts (the first epoch of the
            fine-tuning phase when epochs continue across phases). Defaults to `0`.
        blocks: the layer groups to unfreeze, bottom to top. Defaults to every backbone
            group with a trainable variable.
        initial_scale: a block joins at this fraction of its rate. Defaults to `0.1`
            (Lightning's `initial_denom_lr=10`).
        growth: the fraction is multiplied by this every epoch, up to 1. Defaults to `1.5`
            (Lightning's). `initial_scale=1` gives ULMFiT's plain unfreezing.
        verbose: print the unfrozen blocks when they change. Defaults to `0`.

    Example:
        >>> model.compile(optimizer=with_layer_rates(keras.optimizers.AdamW(1e-3), model), loss=...)
        >>> model.fit(data, epochs=10, callbacks=[GradualUnfreezing(epochs_per_block=2)])
    """

    def __init__(self, epochs_per_block=1, *, schedule=None, start_epoch=0, blocks=None, initial_scale=0.1,
                 growth=1.5, verbose=0):
        super().__init__()
        if schedule is None:
            if isinstance(epochs_per_block, bool) or not isinstance(epochs_per_block, int) or epochs_per_block < 1:
                raise ValueError(f"`epochs_per_block` must be an integer >= 1. Received: epochs_per_block={epochs_per_block!r}")
        else:
            schedule = list(schedule)
            if (not schedule or any(isinstance(e, bool) or not isinstance(e, int) or e < 0 for e in schedule)
                    or schedule != sorted(schedule)):
                raise ValueError("`schedule` must be a non-empty, non-decreasing list of epochs >= 0. "
                                 f"Received: schedule={schedule!r}")
        if not 0 < initial_scale <= 1:
            raise ValueError(f"`initial_scale` must be in (0, 1]. Received: initial_scale={initial_scale!r}")
        if growth < 1:
            raise ValueError(f"`growth` must be >= 1. Received: growth={growth!r}")
        self.epochs_per_block = epochs_per_block
        self.schedule = schedule
        self.start_epoch = int(start_epoch)
        self.blocks = list(blocks) if blocks is not None else None
        self.initial_scale = float(initial_scale)
        self.growth = float(growth)
        self.verbose = verbose
        self.unfrozen = []

    def scales(self, epoch, blocks):
        """`{block: fraction of its rate}` at `fit` epoch `epoch` (0-based); `blocks` bottom to top.

        A pure function of the epoch: 0 before the block's turn, then `initial_scale`
        times `growth` per epoch since, capped at 1.
        """
        check_schedule_depth(self.schedule, blocks)
        offset = epoch - self.start_epoch
        scales = {}
        for position, block in enumerate(reversed(blocks)):   # top block first
            joins = self.joining_epoch(position)
            if joins is None or offset < joins:
                scales[block] = 0.0
            else:
                scales[block] = min(1.0, self.initial_scale * self.growth ** (offset - joins))
        return {block: scales[block] for block in blocks}

    def joining_epoch(self, position):
        """The schedule epoch at which the block `position` places below the top joins, or None."""
        if self.schedule is not None:
            return self.schedule[position] if position < len(self.schedule) else None
        return position * self.epochs_per_block

    def on_train_begin(self, logs=None):
        optimizer = self.model.optimizer
        if not isinstance(optimizer, LayerRateOptimizer):
            raise ValueError("GradualUnfreezing sets layer-group multipliers: compile the model with "
                             "`headstart.models.layer_rates.with_layer_rates(optimizer, model)`. "
                             f"Received: optimizer={type(optimizer).__name__}")
        self._optimizer = optimizer
        if self.blocks is None:
            self._blocks = [group for group in optimizer.groups_of(self.model.trainable_variables) if group != HEAD]
        else:
            unknown = [block for block in self.blocks if block not in optimizer.multipliers]
            if unknown:
                raise ValueError(f"Unknown layer groups {unknown}. Groups: {', '.join(optimizer.multipliers)}")
            self._blocks = list(self.blocks)
        check_schedule_depth(self.schedule, self._blocks)
        self.unfrozen = []

    def on_epoch_begin(self, epoch, logs=None):
        unfrozen = []
        for block, scale in self.scales(epoch, self._blocks).items():
            self._optimizer.set_multiplier(block, self._optimizer.multipliers[block] * scale)
            if scale > 0:
                unfrozen.append(block)
        if self.verbose and unfrozen != self.unfrozen:
            print(f"GradualUnfreezing: epoch {epoch + 1}: training {', '.join(unfrozen) or 'the head only'}")
        self.unfrozen = unfrozen


def check_schedule_depth(schedule, blocks):
    """An explicit schedule cannot unfreeze more blocks than there are."""
    if schedule is not None and len(schedule) > len(blocks):
        raise ValueError(f"The unfreezing schedule has {len(schedule)} steps but the backbone has "
                         f"{len(blocks)} blocks to unfreeze ({', '.join(blocks)}). Received: schedule={schedule!r}")
