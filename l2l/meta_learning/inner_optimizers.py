"""Differentiable inner-loop optimizers over any `nets` update rule, like PyTorch's `higher`.

    rule = nets.Adam(learning_rate=0.01, learnable=True)    # or a trained LSTM: rule_from(path)
    with tf.GradientTape() as tape:
      with l2l.innerloop_ctx(model, rule) as (fmodel, diffopt):
        for _ in range(5):
          diffopt.step(lambda f: mse(f(x_support), y_support))
        meta_loss = mse(fmodel(x_query), y_query)
    tape.gradient(meta_loss, model.trainable_variables + rule.trainable_variables)

`fmodel` runs the module at its current "fast" parameters (`l2l.functional.call`); each
`diffopt.step` takes the gradient of the loss in them and adds the rule's update, so the whole
trajectory is differentiable in the module's initial variables and in the rule's trainable
variables (a learned LSTM's weights, `learnable=True` hyperparameters). With
`track_higher_grads=False` (test time) gradients and parameters are cut at every step: no
second-order graph, and nothing flows back to the initial parameters.
"""

import contextlib
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple, Union

import tensorflow as tf

import nets
from l2l.meta_learning import functional
from l2l.meta_learning import maml as maml_lib
from l2l import meta_optimizer as meta_optimizer_lib

Forward = Callable[..., Any]


def rule_from(source: Union[nets.UpdateRule, meta_optimizer_lib.MetaOptimizer, str],
              netid: Optional[str] = None) -> nets.UpdateRule:
  """An update rule from a rule, a `MetaOptimizer`, or a directory saved by `MetaOptimizer.save`.

  Args:
    source: the rule itself, a MetaOptimizer, or the path of a saved one (a trained LSTM).
    netid: which of the MetaOptimizer's nets; optional when it has one.

  Raises:
    ValueError: no saved optimizer at the path, or an ambiguous / unknown `netid`.
  """
  if isinstance(source, nets.UpdateRule):
    return source
  if isinstance(source, str):
    source = meta_optimizer_lib.MetaOptimizer.load(source)
  if not isinstance(source, meta_optimizer_lib.MetaOptimizer):
    raise TypeError(f"expected an update rule, a MetaOptimizer or a path, got "
                    f"{type(source).__name__}")
  if netid is None:
    if len(source.nets) != 1:
      raise ValueError(f"the MetaOptimizer has nets {sorted(source.nets)}; pass netid")
    netid = next(iter(source.nets))
  if netid not in source.nets:
    raise ValueError(f"unknown netid {netid!r}; the MetaOptimizer has {sorted(source.nets)}")
  return source.nets[netid]


class FunctionalModel:
  """A module bound to "fast" parameter values: calling it runs the module at `params`.

  Buffers (BatchNorm statistics) are threaded explicitly through `buffers`, as in
  `l2l.meta_learning.maml.Learner`: the module's own buffer variables are never assigned.
  """

  def __init__(self, module: tf.Module, params: Optional[functional.Params] = None):
    self.module = module
    self.params: Dict[str, Any] = dict(functional.named_parameters(module)
                                       if params is None else params)
    self.buffers: Optional[Dict[str, tf.Tensor]] = functional.initial_buffers(module)

  def forward_at(self, params: functional.Params) -> Forward:
    """The module's forward at `params`, reading and updating `self.buffers`."""
    def forward(*args: Any, **kwargs: Any) -> Any:
      output, self.buffers = functional.call_threaded(self.module, params, self.buffers, *args,
                                                      **kwargs)
      return output
    return forward

  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    return self.forward_at(self.params)(*args, **kwargs)


class DifferentiableOptimizer:
  """Steps a `FunctionalModel`'s parameters with an update rule, differentiably.

  Args:
    fmodel: the model whose `params` this optimizer updates.
    rule: any `nets` update rule (hand-designed or learned).
    adapt_names: the parameters to update (default all), in the order the rule sees them.
    track_higher_grads: keep the trajectory differentiable (meta-training); False cuts
      gradients and parameters at each step (test time, no second-order graph).
    first_order: keep the trajectory differentiable but stop the gradients fed to the rule
      (first-order MAML with this rule).
    allow_unused: parameters the loss does not use get zero gradients instead of an error.
    num_steps: the planned number of steps, for rules that read the training progress
      (`nets.UpdateRule.uses_context`); None gives them their default horizon.
  """

  def __init__(self, fmodel: FunctionalModel, rule: nets.UpdateRule,
               adapt_names: Optional[Sequence[str]] = None, track_higher_grads: bool = True,
               first_order: bool = False, allow_unused: bool = False,
               num_steps: Optional[int] = None):
    if not isinstance(rule, nets.UpdateRule):
      raise TypeError(f"rule must be a nets.UpdateRule, got {type(rule).__name__}")
    self.fmodel = fmodel
    self.rule = rule
    self.names = maml_lib.check_names(adapt_names, fmodel.params)
    self.track_higher_grads = bool(track_higher_grads)
    self.first_order = bool(first_order)
    self.allow_unused = bool(allow_unused)
    self.state = nets.initial_state_of(
        rule, [tf.convert_to_tensor(fmodel.params[n]) for n in self.names], num_steps)

  def step(self, loss_fn: Callable[[Forward], tf.Tensor]) -> tf.Tensor:
    """One update on `loss_fn(forward)`; returns the loss before the update."""
    loss, grads = maml_lib.gradients(
        self.fmodel.params, lambda p: loss_fn(self.fmodel.forward_at(p)), self.names,
        self.allow_unused)
    grads = [grads[n] for n in self.names]
    if self.first_order or not self.track_higher_grads:
      grads = [tf.stop_gradient(g) for g in grads]
    updates, self.state = nets.call_rule(self.rule, grads, self.state,
                                         params=[self.fmodel.params[n] for n in self.names],
                                         loss=tf.stop_gradient(loss))
    params = dict(self.fmodel.params)
    for name, update in zip(self.names, updates):
      params[name] = params[name] + update
      if not self.track_higher_grads:
        params[name] = tf.stop_gradient(params[name])
    if not self.track_higher_grads:
      self.state = tf.nest.map_structure(tf.stop_gradient, self.state)
    self.fmodel.params = params
    return loss


@contextlib.contextmanager
def innerloop_ctx(module: tf.Module, rule: Union[nets.UpdateRule, str, Any],
                  adapt_names: Optional[Sequence[str]] = None, track_higher_grads: bool = True,
                  first_order: bool = False, allow_unused: bool = False,
                  num_steps: Optional[int] = None
                  ) -> Iterator[Tuple[FunctionalModel, DifferentiableOptimizer]]:
  """`(fmodel, diffopt)` starting at the module's variables (see the module docstring).

  `rule` may also be a MetaOptimizer or the path of a saved one (see `rule_from`).
  """
  fmodel = FunctionalModel(module)
  yield fmodel, DifferentiableOptimizer(fmodel, rule_from(rule), adapt_names, track_higher_grads,
                                        first_order, allow_unused, num_steps)
