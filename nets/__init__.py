"""Optimizer networks ("update rules"), learned and hand-designed, behind one interface."""

from nets.base import UpdateRule
from nets.coordinatewise import CoordinateWiseDeepLSTM
from nets.preprocess import LogAndSign, log_and_sign
from nets.registry import NETS, factory, restore, save

__all__ = [
    "UpdateRule", "CoordinateWiseDeepLSTM", "LogAndSign", "log_and_sign", "NETS", "factory",
    "save", "restore",
]
