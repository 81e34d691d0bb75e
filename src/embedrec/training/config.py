"""Training settings: what the training loop reads, validated in one place.

The defaults of the settings users set live in ``Recommender.__init__`` (the one source the
CLI and the TOML config read too); ``TrainConfig`` adds only the few that are not public.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from numbers import Integral, Real

LOSSES = ("softmax", "bpr")
NEGATIVE_SOURCES = ("batch", "catalogue")
PRECISIONS = ("auto", "fp32", "bf16")
WHOLE_NUMBERS = (
    "epochs",
    "batch_size",
    "negatives",
    "workers",
    "patience",
    "validation_users",
    "seed",
)
NUMBERS = ("lr", "dense_lr", "weight_decay", "logq_scale", "temperature")
# settings that must be above 0; the other NUMBERS may be 0
POSITIVE_NUMBERS = ("lr", "dense_lr", "temperature")


@dataclass
class TrainConfig:
    """Training hyper-parameters (see ``Recommender`` for what each means)."""

    epochs: int
    batch_size: int
    lr: float
    loss: str
    # 1 removes popularity from the sampled softmax (Yi et al. 2019); above 1 keeps some of
    # it, which pays where popular items are what users want (MovieLens: 1.5 was best)
    logq_scale: float
    temperature: float  # for models with L2-normalised vectors
    negatives: int  # shared by the batch; 16 per positive for unfactorised models
    negatives_from: str
    # "bf16": on a CPU with bf16 instructions (AVX512-BF16, AMX) a hybrid step on 5M car
    # events took 22% less time with the same validation recall; without them autocast
    # emulates bf16 and is slower, and on a GPU it brought nothing at these batch sizes
    precision: str
    workers: int
    patience: int
    validation_users: int
    seed: int
    device: str
    time_budget: float | None = None  # seconds; the epoch that passes it is the last
    warm_up: bool = True  # the first epoch is no early-stopping candidate (EarlyStopping)
    dense_lr: float = 3e-3
    weight_decay: float = 1e-5

    def __post_init__(self) -> None:
        for name in WHOLE_NUMBERS + NUMBERS:
            value = getattr(self, name)
            whole = name in WHOLE_NUMBERS
            if isinstance(value, bool) or not isinstance(value, Integral if whole else Real):
                kind = "a whole number" if whole else "a number"
                raise ValueError(f"{name} must be {kind}, got {value!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.negatives_from not in NEGATIVE_SOURCES:
            raise ValueError(
                f"negatives_from must be one of {', '.join(NEGATIVE_SOURCES)}, "
                f"got {self.negatives_from!r}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        for name in NUMBERS:
            value = getattr(self, name)
            if name in POSITIVE_NUMBERS and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value}")
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        for name in (n for n in WHOLE_NUMBERS if n != "seed"):
            if getattr(self, name) < (0 if name == "patience" else 1):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        budget = self.time_budget
        if budget is not None and (
            isinstance(budget, bool) or not isinstance(budget, Real) or not budget > 0
        ):
            raise ValueError(f"time_budget must be a positive number of seconds, got {budget!r}")

    def to_dict(self) -> dict:
        return asdict(self)
