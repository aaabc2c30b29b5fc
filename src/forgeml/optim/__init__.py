"""Optimizers and learning-rate schedulers, as in ``torch.optim``.

>>> import forgeml as fm
>>> model = fm.nn.Linear(4, 2)
>>> opt = fm.optim.AdamW(model.parameters(), lr=1e-3)
>>> sched = fm.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100)
>>> loss = model(fm.randn(8, 4)).pow(2).mean()
>>> loss.backward()
>>> opt.step(); sched.step(); opt.zero_grad()
"""

from . import lr_scheduler
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .lr_scheduler import (
    CosineAnnealingLR,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    OneCycleLR,
    ReduceLROnPlateau,
    StepLR,
)
from .optimizer import Optimizer, required
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = [
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "CosineAnnealingLR",
    "ExponentialLR",
    "LRScheduler",
    "LambdaLR",
    "LinearLR",
    "MultiStepLR",
    "OneCycleLR",
    "Optimizer",
    "RMSprop",
    "ReduceLROnPlateau",
    "StepLR",
    "lr_scheduler",
    "required",
]
