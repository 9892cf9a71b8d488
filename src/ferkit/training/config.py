"""Training configuration: one dataclass tree, read from YAML, overridden from the CLI."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ferkit.errors import ConfigError
from ferkit.files import write_whole
from ferkit.settings import DEFAULT_DATA


@dataclass
class AugmentConfig:
    """Batch augmentation, applied to training batches only (off at evaluation)."""

    enabled: bool = True
    flip: bool = True  # horizontal flip with p=0.5
    shift: float = 0.1  # max translation, fraction of the side
    rotation: float = 10.0  # max degrees
    scale: float = 0.1  # zoom in [1 - scale, 1 + scale]
    brightness: float = 0.2  # additive, fraction of the range
    contrast: float = 0.2  # multiplicative around the mean
    erasing: float = 0.25  # probability of one random erased rectangle
    mixup: float = 0.0  # Beta(alpha, alpha) mixup of images and targets; 0 = off
    # Photo-like degradations (what the photo pipeline feeds the model), each the probability that a
    # face gets it; 0 = off. Crop jitter of detector + aligner is shift / scale / rotation above.
    blur: float = 0.0  # Gaussian blur, sigma 0.3-1.2 px at 48 px
    downscale: float = 0.0  # down to 35-80% of the side and back up (a small face in a photo)
    jpeg: float = 0.0  # JPEG re-encoding at quality 20-70
    gamma: float = 0.0  # gamma in [1/1.5, 1.5]
    noise: float = 0.0  # Gaussian pixel noise, sigma up to 0.04 of the range
    # share of stored views drawn from the face as the photo pipeline frames it (ferkit's detector and
    # aligner, ferkit.faces.reframe) instead of FER2013's crop; stored views only (teacher_views > 0)
    reframe: float = 0.0
    # share of stored views mixed with another training face's view, lambda ~ U(0, 1), before the
    # teacher answers them (function matching on mixed faces, Beyer et al. 2022); stored views only
    view_mixup: float = 0.0


PHOTO_DEGRADATIONS = ("blur", "downscale", "jpeg", "gamma", "noise")


PRECISIONS = ("auto", "bf16-mixed", "32-true", "16-mixed")


def resolve_precision(config: TrainConfig) -> str:
    """The precision Lightning trains with: `auto` is bf16-mixed on a CPU that computes bf16 natively
    or a GPU that supports it, else 32-true; any other value as given."""
    if config.precision != "auto":
        return config.precision
    if config.accelerator == "cpu":
        from ferkit import hardware

        return "bf16-mixed" if hardware.has_native_bf16() else "32-true"
    import torch

    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"


@dataclass
class TrainConfig:
    name: str = ""  # run name; default: <model>-<timestamp>
    runs_dir: str = "runs"
    data: str = DEFAULT_DATA
    skip_bad: bool = False  # skip bad label rows and images (listed in train.log) instead of stopping
    model: str = "resnet"
    model_args: dict[str, Any] = field(default_factory=dict)
    protocol: str = "crossentropy"  # majority|crossentropy|probability|multi_target|all_votes|argmax
    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    momentum: float = 0.9  # sgd only
    weight_decay: float = 1e-4  # L2 penalty (Adam: coupled, as Keras' kernel L2)
    schedule: str = "plateau"  # plateau | onecycle | cosine | constant
    plateau_factor: float = 0.2
    plateau_patience: int = 3
    early_stopping_patience: int = 8  # 0 = off
    # the epoch the run writes as its model: "best" (lowest validation loss, Keras' restore_best_weights)
    # or "last" (where the schedule ends: a short warm-started or quantisation-aware fine-tuning, whose
    # mid-schedule epochs are still moving); may change on --resume, which then rewrites the model
    keep_epoch: str = "best"
    # wall-time budget of the whole run, resumes included (Lightning's Timer state is in the checkpoint);
    # 0 = none. Stops after the current step; extend with `--resume RUN --set max_hours=H`.
    max_hours: float = 0.0
    label_smoothing: float = 0.0
    # none | weights (loss weights ~ 1/sqrt(frequency)) | sampling (faces drawn ~ 1/sqrt(frequency))
    class_balance: str = "none"
    # tau of the logit-adjusted loss (Menon et al., ICLR 2021): training sees logits + tau * log(the
    # training set's class frequencies), so the network's own logits learn a posterior with that much
    # of the crowd's class prior taken out (1 = balanced); 0 = off
    logit_adjustment: float = 0.0
    ema_decay: float = 0.0  # 0 = off; e.g. 0.999 keeps an exponential moving average of weights
    # train against the int8 export's rounding (training/quant.py), e.g. a few warm-started epochs
    # before `ferkit export --int8`; the stored weights stay float
    quant_aware: bool = False
    # knowledge distillation (training/distill.py): a model folder or bundled name whose tempered
    # softmax on each training face is mixed into the target with weight distill_weight; "" = off
    teacher: str = ""
    distill_weight: float = 0.5
    distill_temperature: float = 1.0
    # 0: the teacher sees each clean face once; K > 0: K stored augmented views per face, the student
    # trained on the very view the teacher scored (function matching; training/distill.py)
    teacher_views: int = 0
    # a run folder whose stored teacher pass (same teacher, views, seed and view augmentation) this run
    # takes instead of making its own: the pass does not depend on the student or its schedule
    teacher_pass_from: str = ""
    # warm start: a model folder or bundled name of the same network (model + model_args) whose
    # weights the run starts from instead of a random init, e.g. to re-distill `fast` from a new
    # teacher in a few epochs; "" = random init. A resumed run takes its weights from its checkpoint.
    init: str = ""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # bf16-mixed trains 1.7-2.4x faster than fp32 on CPUs with AVX512-BF16 or AMX, and ~10-20x slower
    # on the others, which emulate it (bench/speed/train_throughput.py); auto = bf16-mixed where it is fast
    precision: str = "32-true"
    channels_last: bool = True
    threads: int = 0  # torch threads; 0 = all cores
    seed: int = 0
    limit_train_batches: int | None = None
    limit_val_batches: int | None = None
    accelerator: str = "cpu"
    devices: int | str = 1
    strategy: str = "auto"
    progress_bar: bool = True

    def validate(self) -> TrainConfig:
        from ferkit.data.protocols import PROTOCOLS
        from ferkit.models import list_models

        checks = [
            (self.model in list_models(), "model", f"one of {', '.join(list_models())}"),
            (self.protocol in PROTOCOLS, "protocol", f"one of {', '.join(PROTOCOLS)}"),
            (self.epochs >= 1, "epochs", "at least 1"),
            (self.batch_size >= 1, "batch_size", "at least 1"),
            (self.lr > 0, "lr", "positive"),
            (self.weight_decay >= 0, "weight_decay", "zero or positive"),
            (self.optimizer in ("adam", "adamw", "sgd"), "optimizer", "adam, adamw or sgd"),
            (self.schedule in ("plateau", "onecycle", "cosine", "constant"), "schedule",
             "plateau, onecycle, cosine or constant"),
            (0 < self.plateau_factor < 1, "plateau_factor", "between 0 and 1"),
            (self.plateau_patience >= 0, "plateau_patience", "zero or positive"),
            (self.early_stopping_patience >= 0, "early_stopping_patience", "zero or positive"),
            (self.max_hours >= 0, "max_hours", "zero or positive"),
            (0 <= self.label_smoothing < 1, "label_smoothing", "in [0, 1)"),
            (self.class_balance in ("none", "weights", "sampling"), "class_balance",
             "none, weights or sampling"),
            (0 <= self.logit_adjustment <= 2, "logit_adjustment", "in [0, 2]"),
            (not self.logit_adjustment or self.class_balance == "none", "logit_adjustment",
             "0 when class_balance is weights or sampling (each removes the class prior; together "
             "they would remove it twice)"),
            (0 <= self.ema_decay < 1, "ema_decay", "in [0, 1)"),
            (self.keep_epoch in ("best", "last"), "keep_epoch", "best or last"),
            (not (self.quant_aware and self.ema_decay), "quant_aware",
             "false when ema_decay is set (the average of the weights is not what was trained rounded)"),
            (0 <= self.distill_weight <= 1, "distill_weight", "in [0, 1]"),
            (self.distill_temperature > 0, "distill_temperature", "positive"),
            (self.teacher_views >= 0, "teacher_views", "zero or positive"),
            (not self.teacher_views or self.teacher, "teacher_views", "a teacher (teacher_views needs one)"),
            (not self.teacher_pass_from or self.teacher_views, "teacher_pass_from",
             "empty unless teacher_views > 0 (only stored views make a teacher pass)"),
            (not self.teacher or self.protocol != "multi_target", "teacher",
             "no teacher with protocol multi_target (its targets are sets of accepted emotions, "
             "not a distribution to mix with)"),
            (self.precision in PRECISIONS, "precision", ", ".join(PRECISIONS)),
            (self.threads >= 0, "threads", "zero or positive"),
            (self.augment.mixup >= 0, "augment.mixup", "zero or positive"),
            (0 <= self.augment.erasing <= 1, "augment.erasing", "a probability in [0, 1]"),
            *[(0 <= getattr(self.augment, k) <= 1, f"augment.{k}", "a probability in [0, 1]")
              for k in PHOTO_DEGRADATIONS],
            (0 <= self.augment.reframe <= 1, "augment.reframe", "a probability in [0, 1]"),
            (not self.augment.reframe or self.teacher_views, "augment.reframe",
             "0 unless teacher_views > 0 (the re-framed faces are drawn into the stored views)"),
            (0 <= self.augment.view_mixup <= 1, "augment.view_mixup", "a share in [0, 1]"),
            (not self.augment.view_mixup or self.teacher_views, "augment.view_mixup",
             "0 unless teacher_views > 0 (the mixed faces are stored views the teacher answers)"),
        ]
        for ok, key, expected in checks:
            if not ok:
                raise ConfigError(f"config value {key}={_get(self, key)!r} is invalid: expected {expected}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check/convert one value to its field's type; ConfigError naming the key otherwise."""
    hint = annotation
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"config key {key}: bad value {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
    elif origin is dict or hint is dict:
        if isinstance(value, dict):
            return value
    else:
        return value
    type_name = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"config key {key}: expected {type_name}, got {value!r}")


def _apply(obj: Any, values: dict[str, Any], prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    known = {f.name for f in fields(obj)}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in known:
            raise ConfigError(f"unknown config key {full!r}; known keys: {', '.join(sorted(known))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {full}: expected a mapping, got {value!r}")
            _apply(current, value, prefix=f"{full}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], full))


def parse_override(text: str) -> dict[str, Any]:
    """'augment.mixup=0.2' -> {'augment': {'mixup': 0.2}} (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({problem})") from None
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def _merge(into: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v
    return into


def load_config(path: str | Path | None = None, overrides: list[dict[str, Any]] | None = None
                ) -> TrainConfig:
    """Defaults <- YAML file <- overrides (in order), validated."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys")
        values = loaded
    for override in overrides or []:
        _merge(values, override)
    config = TrainConfig()
    _apply(config, values)
    return config.validate()


def save_config(config: TrainConfig, path: Path, extra: dict[str, Any] | None = None,
                header: str = "") -> None:
    """The config as YAML (what `--resume` reads back), after an optional comment `header`."""
    data = config.to_dict() | (extra or {})
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    write_whole(path, comment + yaml.safe_dump(data, sort_keys=False))  # `--resume` reads it back
