"""The LightningModule: a registered model + loss for the label protocol + optimiser/schedule."""

from __future__ import annotations

import logging
from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

from ferkit import settings
from ferkit.errors import ConfigError
from ferkit.models import INPUT_SIZE, PIXEL_MEAN, PIXEL_STD, create_model
from ferkit.training.augment import BatchAugment
from ferkit.training.config import TrainConfig
from ferkit.training.quant import QuantAware

log = logging.getLogger("ferkit.training")


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                       weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy to a target distribution (one-hot targets give the usual CE)."""
    per_sample = -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1)
    if weights is not None:
        per_sample = per_sample * (targets @ weights)
    return per_sample.mean()


def multi_target_loss(logits: torch.Tensor, targets: torch.Tensor,
                      weights: torch.Tensor | None = None) -> torch.Tensor:
    """FERPlus multi-target loss: -log of the probability mass on the accepted emotions."""
    log_probs = F.log_softmax(logits.float(), dim=1)
    accepted = targets > 0
    per_sample = -torch.logsumexp(log_probs.masked_fill(~accepted, float("-inf")), dim=1)
    if weights is not None:
        per_sample = per_sample * (targets @ weights)
    return per_sample.mean()


def channels_last_is_safe(model: torch.nn.Module) -> bool:
    """False if the model has a strided 1x1 convolution with fewer than 16 channels both in and out
    (e.g. a tiny ResNet's shortcut): torch 2.13's channels_last backward of that convolution
    corrupts the heap on AVX-512 CPUs (measured: 8->8 / 12->12 / 15->15 crash, 8->16 and 16->8 do
    not), so such models train in the default memory format."""
    return not any(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) and m.stride != (1, 1)
                   and m.in_channels < 16 and m.out_channels < 16 for m in model.modules())


def ema_with_warmup(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor], None]:
    """AveragedModel's update for an EMA whose decay warms up as TensorFlow's
    ExponentialMovingAverage(num_updates): min(decay, (1 + step) / (10 + step)). A fixed 0.999 from
    step 0 keeps the random init in the average for thousands of steps (measured on FERPlus: Valid
    stuck at the majority class for 5+ epochs). Integer buffers (BatchNorm's batch count) are copied."""
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        step = int(n_averaged) - 1
        weight = 1 - min(decay, (1 + step) / (10 + step))
        for a, c in zip(averaged, current, strict=True):
            if a.is_floating_point():
                a.lerp_(c, weight)
            else:
                a.copy_(c)
    return update


class FerClassifier(L.LightningModule):
    def __init__(self, config: TrainConfig, class_weights: torch.Tensor | None = None,
                 class_frequencies: torch.Tensor | None = None,
                 initial_weights: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.config = config
        self.model = create_model(config.model, **config.model_args)
        if initial_weights is not None:  # a warm start (config.init), before the EMA copies the model
            self.model.load_state_dict(initial_weights)
        self.augment = BatchAugment(config.augment)
        self.register_buffer("class_weights", class_weights, persistent=False)
        # the logit adjustment added in training only (config.logit_adjustment); (8,) or None
        shift = None
        if config.logit_adjustment:
            if class_frequencies is None:
                raise ConfigError("logit_adjustment needs the training set's class frequencies")
            shift = config.logit_adjustment * torch.log(class_frequencies.float().clamp_min(1e-4))
        self.register_buffer("logit_shift", shift, persistent=False)
        self.channels_last = config.channels_last and channels_last_is_safe(self.model)
        if config.channels_last and not self.channels_last:
            log.warning("channels_last off for this model: it has a strided 1x1 convolution with under "
                        "16 channels in and out, whose channels_last backward crashes torch on AVX-512 CPUs")
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # The weight EMA is torch's AveragedModel (params and BatchNorm buffers); n_averaged starts at
        # 1 so the first update already averages with the copy instead of overwriting it.
        self.ema = None
        if config.ema_decay:
            self.ema = AveragedModel(self.model, multi_avg_fn=ema_with_warmup(config.ema_decay),
                                     use_buffers=True)
            self.ema.requires_grad_(False).n_averaged.fill_(1)
        # quantisation-aware training: fake int8 where the export quantises (training/quant.py)
        self.quant = None
        if config.quant_aware:
            self.quant = QuantAware(self.model, (1, INPUT_SIZE, INPUT_SIZE), settings.INT8_WEIGHT_BITS)

    # -- data in: uint8 (N,1,48,48) -> normalised float, augmented in training --------------
    def _inputs(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        x = images.float() / 255.0
        if train and not self.config.teacher_views:  # stored views come augmented, as the teacher saw them
            x = self.augment(x)
        x = (x - PIXEL_MEAN) / PIXEL_STD  # the formula of models.normalize, on [0, 1] input
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _forward(self, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        # quant_aware excludes the EMA (config), so `model` is then always self.model, rounded as int8 will be
        return model(x) if self.quant is None else self.quant.forward(model, x)

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.config.protocol == "multi_target":
            return multi_target_loss(logits, targets, self.class_weights)
        return soft_cross_entropy(logits, targets, self.class_weights)

    def on_train_epoch_start(self) -> None:
        # Augmentation/dropout randomness depends only on (seed, epoch): resume == uninterrupted.
        torch.manual_seed(self.config.seed * 100_003 + self.current_epoch)

    def training_step(self, batch, batch_idx):
        images, targets = batch
        x = self._inputs(images, train=True)
        if self.config.protocol == "probability":  # a one-hot label drawn from the votes
            targets = F.one_hot(torch.multinomial(targets, 1).squeeze(1), targets.shape[1]).float()
        if self.config.augment.mixup > 0:
            lam = float(torch.distributions.Beta(self.config.augment.mixup,
                                                 self.config.augment.mixup).sample())
            perm = torch.randperm(x.shape[0], device=x.device)
            x = lam * x + (1 - lam) * x[perm]
            targets = lam * targets + (1 - lam) * targets[perm]
        if self.config.label_smoothing and self.config.protocol != "multi_target":
            eps = self.config.label_smoothing
            targets = targets * (1 - eps) + eps / targets.shape[1]
        logits = self._forward(self.model, x)
        loss = self._loss(logits if self.logit_shift is None else logits + self.logit_shift, targets)
        acc = (logits.argmax(1) == targets.argmax(1)).float().mean()
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train_acc", acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    @property
    def ema_model(self) -> torch.nn.Module | None:
        """The exponential moving average of the weights (a copy of the network), if enabled."""
        return self.ema.module if self.ema is not None else None

    def eval_model(self) -> torch.nn.Module:
        """The weights to validate and export: the EMA copy when enabled."""
        return self.ema_model if self.ema_model is not None else self.model

    def validation_step(self, batch, batch_idx):
        images, targets = batch
        logits = self._forward(self.eval_model(), self._inputs(images, train=False))
        loss = self._loss(logits, targets)
        acc = (logits.argmax(1) == targets.argmax(1)).float().mean()
        n = images.shape[0]
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("val_acc", acc, on_epoch=True, prog_bar=True, batch_size=n)

    def configure_optimizers(self):
        c = self.config
        params = self.model.parameters()
        if c.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, nesterov=True,
                                  weight_decay=c.weight_decay)
        elif c.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
        else:
            opt = torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
        if c.schedule == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="min", factor=c.plateau_factor, patience=c.plateau_patience)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss",
                                                       "interval": "epoch"}}
        if c.schedule == "constant":
            return opt
        total = int(self.trainer.estimated_stepping_batches)
        if c.schedule == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=c.lr, total_steps=total,
                                                        pct_start=0.15)
        else:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
