"""Optimizer networks ("update rules"), learned and hand-designed, behind one interface."""

from nets.base import UpdateRule, call_rule, initial_state_of
from nets.coordinatewise import CoordinateWiseDeepLSTM
from nets.hand_designed import (NAG, Adam, Momentum, RMSProp, Sgd, adam_update, momentum_update,
                                rmsprop_update, safe_sqrt, sgd_update)
from nets.kernel import KernelDeepLSTM
from nets.mlp_rule import PerParameterMLP
from nets.preprocess import LogAndSign, log_and_sign
from nets.registry import NETS, factory, restore, save
from nets.standard import StandardDeepLSTM

__all__ = [
    "UpdateRule", "call_rule", "initial_state_of", "CoordinateWiseDeepLSTM", "KernelDeepLSTM", "StandardDeepLSTM", "PerParameterMLP", "Sgd",
    "Momentum", "NAG", "RMSProp", "Adam", "sgd_update", "momentum_update", "rmsprop_update",
    "adam_update", "safe_sqrt", "LogAndSign", "log_and_sign", "NETS", "factory", "save",
    "restore",
]
