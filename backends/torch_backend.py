"""The torch backend: `minidyn.backend.Backend` on torch tensors, on the CPU or a CUDA GPU.

    backend = torch_backend(device="auto")          # "cuda" when a GPU is there, else "cpu"
    model = backend.make_model("cnn4", (1, 28, 28), 10, seed=0)
    losses, grad = backend.loss_and_grad(model, x, y, loss="ce")   # per example, (B,), x-shaped

Design points:

- The class is a `minidyn.backend.Backend`: its array side is the base's numpy-style defaults
  run on the `torch` namespace, with overrides only where torch's names or arguments differ;
  crop_flip is the base's. The model side and the process side (torchrun) are its own.
- Gradients for attacks and FOSC are per example: `torch.autograd.grad(losses.sum(), x)`, so
  row i is d loss_i / d x_i. Nothing is accumulated into parameters' `.grad`.
- Attacks run the model in `attack_mode` ("eval" by default). In "train" mode BatchNorm
  normalises with batch statistics, which couples the examples of a batch (one example's
  gradient then depends on the others, which breaks per-example stopping) and updates the
  running statistics on every attack step. The model's own modes are restored afterwards.
- All random numbers come from explicit `torch.Generator`s (`rng`); model initialisation seeds
  a forked copy of torch's CPU generator, so the global RNG is not disturbed.
- Checkpoints are plain dictionaries of tensors and JSON-able values written atomically and
  always read with `torch.load(weights_only=True)`: a checkpoint cannot run code when loaded.
  `load_model(path)` rebuilds a model from a checkpoint alone, for use outside minidyn. The
  file format and its checks against hostile files are `torch_checkpoint`'s; the device and
  the torchrun set-up `torch_devices`'; the --compile fallback `torch_compile`'s.
- Optional: `amp="bf16"` runs forward passes under `torch.autocast(..., dtype=torch.bfloat16)`
  (losses are computed in float32); `channels_last=True` stores models and image batches in
  NHWC memory order (faster convolutions on recent GPUs).
"""
from __future__ import annotations

import base64
import contextlib
import os
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from minidyn.backend import Backend, check_outer
from minidyn.backends import torch_checkpoint
from minidyn.backends.torch_checkpoint import checked_state, first_line, load_model  # noqa: F401  (load_model re-exported)
from minidyn.backends.torch_compile import compiled_or_eager
from minidyn.backends.torch_devices import init_distributed, process_device, resolve_device
from minidyn.backends.torch_models import MODEL_NAMES, build_model  # noqa: F401  (re-exported)
from minidyn.errors import CheckpointError, ConfigError

_FLOATS = {"float32": torch.float32, "float64": torch.float64}
_ATTACK_MODES = ("eval", "train")
_LOSSES = ("ce", "cw", "dlr", "dlr-targeted", "kl", "margin-targeted")
_AMP = {None: None, "none": None, "off": None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def _trades_losses(z_nat: torch.Tensor, z_adv: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """TRADES per example: CE(z_nat, y) + beta KL(softmax(z_nat) || softmax(z_adv)), (B,).

    yaodongyu/TRADES 6e8e11b7c281371c2f027ffadfbaea80361f09de trades.py lines 79-83
    (`trades_loss`), whose loss is the batch mean of these. Deviation: the authors call
    model(x_natural) twice in training mode (once for the CE, once inside the KL, after
    model(x_adv)); both give the same logits and the sum of the two gradient branches equals
    the gradient through one, so train_step runs it once (BatchNorm's running statistics see
    natural then adversarial; the authors' natural, adversarial, natural).
    """
    kl = F.kl_div(F.log_softmax(z_adv, dim=1), F.softmax(z_nat, dim=1), reduction="none").sum(dim=1)
    return F.cross_entropy(z_nat, y, reduction="none") + beta * kl


def _mart_losses(z_nat: torch.Tensor, z_adv: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """MART per example, (B,), with q = softmax(z_adv), p = softmax(z_nat), t the most probable
    class of q other than y (the authors' argsort rule):

        CE(z_adv, y) - log(1.0001 - q_t + 1e-12)
            + beta sum_j p_j (log p_j - log(q_j + 1e-12)) (1.0000001 - p_y).

    YisenWang/MART 2d83e17b381dd2ee52223695e517bf6d5ff09c2c mart.py lines 38-56 (`mart_loss`),
    whose loss is the batch mean of these (the gradient flows through p_y, as there).
    """
    adv_probs = F.softmax(z_adv, dim=1)
    top2 = torch.argsort(adv_probs, dim=1)[:, -2:]
    new_y = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    boosted = F.cross_entropy(z_adv, y, reduction="none") \
        + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), new_y, reduction="none")
    nat_probs = F.softmax(z_nat, dim=1)
    true_probs = nat_probs.gather(1, y[:, None]).squeeze(1)
    kl = F.kl_div(torch.log(adv_probs + 1e-12), nat_probs, reduction="none").sum(dim=1)
    return boosted + beta * kl * (1.0000001 - true_probs)


_OUTER_LOSSES = {"trades": _trades_losses, "mart": _mart_losses}


@contextlib.contextmanager
def _modes(model: nn.Module, train: bool) -> Iterator[None]:
    """Put every submodule in train/eval mode, then restore each one's previous mode."""
    saved = [(m, m.training) for m in model.modules()]
    if all(mode == train for _, mode in saved):  # attacks call this every step: skip the no-op
        yield
        return
    model.train(train)
    try:
        yield
    finally:
        for m, mode in saved:
            m.training = mode


class TorchBackend(Backend):
    """`minidyn.backend.Backend` on torch tensors living on `self.device`.

    The array side is the base's `xp` defaults with `xp = torch` (torch.sign, abs, where,
    flip, argmax(axis=1) and count_nonzero take numpy's arguments), creating tensors on
    `self.device`; this class overrides what differs: transfers, casts, clip with scalar
    bounds, put's cast, the shape of nonzero, and torch.Generator draws and F.pad for
    crop_flip. The model side is autograd's; the process side is torchrun's.
    """

    name = "torch"
    xp = torch

    def __init__(self, device: str = "auto", attack_mode: str = "eval", channels_last: bool = False,
                 amp: str | None = None, dtype: str = "float32", compile: bool = False):
        self.rank, self.world_size = init_distributed(device)
        self.device = resolve_device(process_device(device, self.world_size))
        self._dev = torch.device(self.device)
        self.device_kwargs = {"device": self._dev}  # the base's zeros, full, arange create here
        self._ddp: dict[int, nn.Module] = {}  # id(model) -> its DistributedDataParallel wrapper
        self.compile = bool(compile)
        self._compiled: dict[Any, Any] = {}  # id(model) (or (id, "logits")) -> compiled attack loss
        if dtype not in _FLOATS:
            raise ConfigError(f"the torch backend computes in float32 or float64, not {dtype!r}")
        self.float_dtype = dtype
        self._float = _FLOATS[dtype]
        self.dtypes = {"float": self._float, "int": torch.int64, "bool": torch.bool, "uint8": torch.uint8}
        if attack_mode not in _ATTACK_MODES:
            raise ConfigError(f"attack_mode must be one of {', '.join(_ATTACK_MODES)}, got {attack_mode!r}")
        self.attack_mode = attack_mode
        self.channels_last = bool(channels_last)
        key = amp.lower() if isinstance(amp, str) else amp
        if key not in _AMP:
            raise ConfigError(f"amp must be None or 'bf16', got {amp!r}")
        self.amp = "bf16" if _AMP[key] is not None else None
        self._amp_dtype = _AMP[key]
        if self.amp and self._float != torch.float32:
            raise ConfigError("amp='bf16' needs dtype float32")

    def __repr__(self) -> str:
        return (f"TorchBackend(device={self.device!r}, attack_mode={self.attack_mode!r}, "
                f"channels_last={self.channels_last}, amp={self.amp!r}, dtype={self.float_dtype!r})")

    # --- the array side: what differs from the numpy defaults ---------------------------------
    def asarray(self, a: Any, dtype: str | None = None) -> torch.Tensor:
        """Tensors (detached), __dlpack__ objects (zero-copy), numpy arrays or lists -> a tensor
        on `self.device`; dtypes as in the base (a CPU -> CUDA copy goes through pinned memory)."""
        if dtype is not None:
            self._dtype(dtype)  # ConfigError for an unknown name, before any work
        if isinstance(a, torch.Tensor):
            tensor = a.detach()
        elif hasattr(a, "__dlpack__") and not isinstance(a, (np.ndarray, np.generic)):
            tensor = torch.from_dlpack(a)  # e.g. a cupy array: zero-copy on its device
        else:
            host = np.asarray(a)
            if host.dtype.kind not in "biuf":
                raise ConfigError(f"cannot make a torch array from data of dtype {host.dtype}")
            if host.dtype.kind == "u" and host.dtype != np.uint8:
                host = host.astype(np.int64)
            if not host.flags.writeable or not host.dtype.isnative:
                host = host.astype(host.dtype.newbyteorder("="), copy=True)
            tensor = torch.from_numpy(host)
        target = self._target_dtype(tensor, dtype)
        if tensor.device != self._dev and self._dev.type == "cuda" and tensor.device.type == "cpu":
            if tensor.dtype != target:  # convert on the host: the transfer is then the final data
                tensor = tensor.to(target)
            return tensor.pin_memory().to(self._dev, non_blocking=True)
        return tensor.to(device=self._dev, dtype=target)

    def _target_dtype(self, tensor: torch.Tensor, dtype: str | None) -> torch.dtype:
        """`dtype`'s torch dtype, or for None the kind kept: floats -> the backend's float
        dtype, bool and uint8 stay, other integers -> int64."""
        if dtype is not None:
            return self.dtypes[dtype]
        if tensor.is_floating_point():
            return self._float
        if tensor.dtype in (torch.bool, torch.uint8):
            return tensor.dtype
        if tensor.is_complex():
            raise ConfigError("complex arrays are not supported")
        return torch.int64

    def to_numpy(self, a: Any) -> np.ndarray:
        """A tensor -> numpy on the host (bfloat16 and float16 as float32)."""
        if not isinstance(a, torch.Tensor):
            return np.asarray(a)
        tensor = a.detach()
        if tensor.dtype in (torch.bfloat16, torch.float16):
            tensor = tensor.float()
        return tensor.cpu().numpy()

    def astype(self, a: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return a.to(dtype)

    def clip(self, a: torch.Tensor, lo: Any, hi: Any) -> torch.Tensor:
        """torch.maximum and minimum take no scalars: clamp where a bound is a number."""
        if isinstance(lo, torch.Tensor) and isinstance(hi, torch.Tensor):  # one kernel, not two
            if lo.dtype != a.dtype or hi.dtype != a.dtype:
                lo, hi = lo.to(dtype=a.dtype), hi.to(dtype=a.dtype)
            return torch.clamp(a, lo, hi)
        out = a
        if isinstance(lo, torch.Tensor):
            out = torch.maximum(out, lo.to(dtype=a.dtype))
        elif lo is not None:
            out = torch.clamp(out, min=lo)
        if isinstance(hi, torch.Tensor):
            out = torch.minimum(out, hi.to(dtype=a.dtype))
        elif hi is not None:
            out = torch.clamp(out, max=hi)
        return out if out is not a else a.clone()

    def sum_per_example(self, a: torch.Tensor) -> torch.Tensor:
        """(B, ...) -> (B,); flatten(1) also handles B = 0 (reshape(0, -1) cannot)."""
        if a.dim() == 1:
            return a.clone()
        return a.flatten(1).sum(dim=1)

    def put(self, a: torch.Tensor, idx: torch.Tensor, values: Any) -> None:
        """a[idx] = values, values cast to a's dtype and device (torch does not cast)."""
        if isinstance(values, torch.Tensor):
            values = values.to(device=a.device, dtype=a.dtype)
        a[idx] = values

    def nonzero(self, mask: torch.Tensor) -> torch.Tensor:
        """(B,) bool -> int64 positions (torch.nonzero returns them as a column)."""
        return torch.nonzero(mask, as_tuple=False).reshape(-1)

    # random generators: torch.Generator on the backend's device
    def rng(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self._dev).manual_seed(int(seed))

    def uniform(self, rng: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
        out = torch.empty(self._shape(shape), dtype=self._float, device=self._dev)
        return out.uniform_(float(low), float(high), generator=rng)

    def normal(self, rng: torch.Generator, shape: tuple[int, ...], std: float) -> torch.Tensor:
        """torch.randn(shape, generator=rng) * std, in the backend's float dtype (TRADES'
        `0.001 * torch.randn(x_natural.shape)`)."""
        return torch.randn(self._shape(shape), generator=rng, dtype=self._float, device=self._dev) * float(std)

    def integers(self, rng: torch.Generator, high: int, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randint(0, high, shape, generator=rng, device=self._dev)

    def random(self, rng: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
        """U[0, 1) in torch's default dtype (float32)."""
        return torch.rand(shape, generator=rng, device=self._dev)

    def rng_state(self, rng: torch.Generator) -> dict:
        """{"torch": base64 of Generator.get_state()} (a ByteTensor), JSON-able."""
        raw = rng.get_state().cpu().numpy().tobytes()
        return {"torch": base64.b64encode(raw).decode("ascii"), "device": rng.device.type}

    def set_rng_state(self, rng: torch.Generator, state: dict) -> None:
        """Restore a state from rng_state; CheckpointError if it is not one of this generator's."""
        if not isinstance(state, dict) or not isinstance(state.get("torch"), str) \
                or state.get("device") != rng.device.type:
            raise CheckpointError(f"the saved random generator state does not fit a {rng.device.type} generator")
        try:
            raw = base64.b64decode(state["torch"], validate=True)
            rng.set_state(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
        except (ValueError, RuntimeError) as exc:
            raise CheckpointError(f"the saved random generator state is damaged ({first_line(exc)})") from None

    # crop_flip's padding
    def zero_pad(self, x: torch.Tensor, pad: int) -> torch.Tensor:
        return F.pad(x, (pad, pad, pad, pad))

    # --- the model side: forward passes, losses, attack gradients ------------------------------
    def _autocast(self) -> Any:
        if self._amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self._dev.type, dtype=self._amp_dtype)

    def _prep_x(self, x: Any) -> torch.Tensor:
        x = x if isinstance(x, torch.Tensor) else self.asarray(x)
        return x.to(device=self._dev, dtype=self._float)

    def _forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            z = model(x)
        return z.to(self._float)  # losses in float32 (or float64) even under bf16 autocast

    @staticmethod
    def _labels(y: Any, device: torch.device) -> torch.Tensor:
        y = y if isinstance(y, torch.Tensor) else torch.as_tensor(np.asarray(y))
        return y.to(device=device, dtype=torch.int64)

    @staticmethod
    def _per_example_loss(z: torch.Tensor, y: torch.Tensor, loss: str,
                          target: torch.Tensor | None = None) -> torch.Tensor:
        if loss == "ce":
            return F.cross_entropy(z, y, reduction="none")
        if loss == "cw":
            true = z.gather(1, y[:, None]).squeeze(1)
            mask = F.one_hot(y, z.shape[1]).bool()
            other = z.masked_fill(mask, float("-inf")).amax(dim=1)
            return other - true
        if loss == "dlr":  # Croce & Hein (2020): -(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3 + 1e-12)
            if z.shape[1] < 3:
                raise ConfigError(f"the DLR loss needs at least 3 classes, got {z.shape[1]}")
            true = z.gather(1, y[:, None]).squeeze(1)
            mask = F.one_hot(y, z.shape[1]).bool()
            other = z.masked_fill(mask, float("-inf")).amax(dim=1)
            top = z.sort(dim=1, descending=True).values
            return -(true - other) / (top[:, 0] - top[:, 2] + 1e-12)
        if loss == "dlr-targeted":  # APGD-T: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)
            if z.shape[1] < 4:
                raise ConfigError(f"the targeted DLR loss needs at least 4 classes, got {z.shape[1]}")
            true, tgt = z.gather(1, y[:, None]).squeeze(1), z.gather(1, target[:, None]).squeeze(1)
            top = z.sort(dim=1, descending=True).values
            return -(true - tgt) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)
        if loss == "kl":  # TRADES (trades.py l. 27, 36-37): KL(softmax(clean) || softmax(z)) per example
            if target.shape != z.shape:
                raise ConfigError(f"loss 'kl' needs the clean logits shaped {tuple(z.shape)}, "
                                  f"got {tuple(target.shape)}")
            return F.kl_div(F.log_softmax(z, dim=1), F.softmax(target, dim=1), reduction="none").sum(dim=1)
        if loss == "margin-targeted":  # FAB-T: z_t - z_y
            return z.gather(1, target[:, None]).squeeze(1) - z.gather(1, y[:, None]).squeeze(1)
        raise ConfigError(f"unknown loss {loss!r}; use one of {', '.join(_LOSSES)}")

    def loss_and_grad(self, model: nn.Module, x: Any, y: Any, loss: str = "ce",
                      target: Any = None, return_logits: bool = False) -> tuple[torch.Tensor, ...]:
        """(losses (B,), grad_x shaped like x), and the logits (B, C) of the same forward pass
        as a third item with return_logits. target: (B,) classes for "dlr-targeted" and
        "margin-targeted", (B, C) clean logits (a constant) for "kl"."""
        if loss not in _LOSSES:
            raise ConfigError(f"unknown loss {loss!r}; use one of {', '.join(_LOSSES)}")
        x = self._prep_x(x).detach().requires_grad_(True)
        y = self._labels(y, x.device)
        if loss in ("ce", "cw", "dlr") and not return_logits:  # the path of every older call
            with _modes(model, self.attack_mode == "train"), torch.enable_grad():
                losses = self._attack_loss(model)(x, y, loss)
                (grad,) = torch.autograd.grad(losses.sum(), x)
            return losses.detach(), grad.detach()
        target = self._loss_target(loss, target, x)
        with _modes(model, self.attack_mode == "train"), torch.enable_grad():
            losses, z = self._attack_loss_logits(model, loss)(x, y, loss, target)
            (grad,) = torch.autograd.grad(losses.sum(), x)
        if return_logits:
            return losses.detach(), grad.detach(), z.detach()
        return losses.detach(), grad.detach()

    def _loss_target(self, loss: str, target: Any, x: torch.Tensor) -> torch.Tensor | None:
        """The loss's `target` as a tensor on x's device: int64 classes for the targeted losses,
        the detached float clean logits for "kl", None for the others; ConfigError if missing."""
        if loss in ("ce", "cw", "dlr"):
            return None
        if target is None:
            raise ConfigError(f"loss {loss!r} needs a target (" + (
                "the clean logits)" if loss == "kl" else "the target classes)"))
        if loss != "kl":
            return self._labels(target, x.device)
        return self._prep_x(target).detach()  # its shape is checked against the logits'

    def _attack_loss(self, model: nn.Module):
        """(x, y, loss) -> per-example losses; with compile=True torch.compile'd, falling back
        to eager where that fails (`minidyn.backends.torch_compile`)."""
        def eager(x, y, loss):
            return self._per_example_loss(self._forward(model, x), y, loss)

        if not self.compile:
            return eager
        if id(model) not in self._compiled:
            self._compiled[id(model)] = compiled_or_eager(eager)
        return self._compiled[id(model)]

    def _attack_loss_logits(self, model: nn.Module, loss: str):
        """(x, y, loss, target) -> (per-example losses, logits): the path of the losses with a
        target and of return_logits, compiled like `_attack_loss` (its own cache entry, so the
        older losses' compiled graph is untouched). "dlr-targeted" stays eager, as it was before
        return_logits existed."""
        def eager(x, y, loss, target):
            z = self._forward(model, x)
            return self._per_example_loss(z, y, loss, target), z

        if not self.compile or loss == "dlr-targeted":
            return eager
        key = (id(model), "logits")
        if key not in self._compiled:
            self._compiled[key] = compiled_or_eager(eager)
        return self._compiled[key]

    def logits(self, model: nn.Module, x: Any) -> torch.Tensor:
        x = self._prep_x(x)
        with _modes(model, False), torch.no_grad():
            return self._forward(model, x)

    def train_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, x: Any, y: Any,
                   batch_size: int | None = None, weights: Any = None, outer: str = "ce",
                   x_natural: Any = None, beta: float = 6.0) -> tuple[float, int]:
        """One SGD step -> (sum of this rank's unweighted losses, its count of z(x) argmax == y),
        both of the weights before the step; the loss is `_train_loss`'s (the global-batch mean,
        or the weighted sum when `weights` (B,) are given) of the per-example l_i of `outer`:
        "ce" CE(z(x), y); "trades" / "mart" `_trades_losses` / `_mart_losses` of the natural
        x_natural (forward first, in training mode, so BatchNorm sees both batches, like the
        authors') and the adversarial x, differentiated by autograd through both forwards."""
        check_outer(outer, x, x_natural, beta)
        x = self._prep_x(x).detach()
        y = self._labels(y, x.device)
        w = None if weights is None else self.asarray(weights).detach().to(device=x.device, dtype=torch.float32)
        with _modes(model, True), torch.enable_grad():
            optimizer.zero_grad(set_to_none=True)
            if outer == "ce":
                z = self._forward(self._trainer(model), x)
                losses = F.cross_entropy(z, y, reduction="none")
            else:
                z_nat = self._forward(self._trainer(model), self._prep_x(x_natural).detach())
                z = self._forward(self._trainer(model), x)
                losses = _OUTER_LOSSES[outer](z_nat, z, y, float(beta))
            self._train_loss(losses, batch_size, w).backward()
            optimizer.step()
        with torch.no_grad():
            total = float(losses.detach().sum().item())
            correct = int((z.detach().argmax(dim=1) == y).sum().item())
        return total, correct

    def _train_loss(self, losses: torch.Tensor, batch_size: int | None, w: torch.Tensor | None) -> torch.Tensor:
        """The scalar this rank differentiates. DDP averages the ranks' gradients, so:
        unweighted, each rank's loss is its part of the global-batch mean, sum / (batch_size /
        world) (the rank's own mean when the batch splits evenly or batch_size is not given; a
        batch that does not split evenly needs the sum); weighted, sum_i w_i loss_i times
        world_size, whose average over the ranks is the gradient of the sum over every rank's
        weighted losses."""
        if w is not None:
            return (losses * w.to(losses.dtype)).sum() * self.world_size
        share = batch_size / self.world_size if batch_size else len(losses)
        return losses.mean() if len(losses) == share else losses.sum() / share

    # --- the model side: training ---------------------------------------------------------------
    def min_train_batch(self, model: nn.Module) -> int:
        """2 when the model has BatchNorm (train mode needs more than one value per channel)."""
        return 2 if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()) else 1

    def _trainer(self, model: nn.Module) -> nn.Module:
        """The module the SGD step runs: under torchrun a DistributedDataParallel wrapper, which
        averages the parameter gradients over the ranks (attacks use the plain module, so their
        input gradients stay per example and cost no communication)."""
        if self.world_size == 1:
            return model
        if id(model) not in self._ddp:
            from torch.nn.parallel import DistributedDataParallel
            ids = [self._dev.index] if self._dev.type == "cuda" else None
            self._ddp[id(model)] = DistributedDataParallel(model, device_ids=ids)
        return self._ddp[id(model)]

    # --- the model side: construction and persistence ------------------------------------------
    def make_model(self, name: str, input_shape: Sequence[int], num_classes: int, seed: int) -> nn.Module:
        """Build `name`, initialised from `seed` alone (on the CPU, so the same on every device)."""
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(int(seed))
            model = build_model(name, input_shape, num_classes)
        model = model.to(device=self._dev, dtype=self._float)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def make_optimizer(self, model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
        return torch.optim.SGD(model.parameters(), lr=float(lr), momentum=float(momentum),
                               weight_decay=float(weight_decay))

    def set_lr(self, optimizer: torch.optim.Optimizer, lr: float) -> None:
        for group in optimizer.param_groups:
            group["lr"] = float(lr)

    def get_params(self, model: nn.Module) -> dict:
        return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}

    def set_params(self, model: nn.Module, params: dict) -> None:
        model.load_state_dict(checked_state(model, params, "parameters"), strict=True)

    def save_checkpoint(self, path: str, model: nn.Module, optimizer: Any, meta: dict) -> None:
        """Write {format, model, optimizer, meta} atomically (`minidyn.backends.torch_checkpoint`)."""
        torch_checkpoint.save_checkpoint(path, model, optimizer, meta)

    def read_meta(self, path: str | os.PathLike) -> dict:
        """The meta dict of a checkpoint.pt, without a model; CheckpointError if it is not one."""
        return torch_checkpoint.read_meta(path)

    def load_checkpoint(self, path: str, model: nn.Module, optimizer: Any | None = None) -> dict:
        """Load a checkpoint.pt into the model (and optimizer), checked whole before anything
        changes (`minidyn.backends.torch_checkpoint`); return its meta."""
        return torch_checkpoint.load_checkpoint(path, model, optimizer, self._dev)

    # --- the process side: torchrun ----------------------------------------------------------
    def all_reduce_sum(self, a: np.ndarray) -> np.ndarray:
        """Element-wise sum of a host array over the ranks (the array itself with one process)."""
        if self.world_size == 1:
            return a
        t = torch.as_tensor(np.ascontiguousarray(a, dtype=np.float64)).to(self._dev)
        torch.distributed.all_reduce(t)
        return t.cpu().numpy()

def torch_backend(device: str = "auto", attack_mode: str = "eval", channels_last: bool = False,
                  amp: str | None = None, dtype: str = "float32", compile: bool = False) -> TorchBackend:
    """The factory `minidyn.backend.get_backend("torch", ...)` calls.

    device: "auto" | "cpu" | "cuda" | "cuda:N". attack_mode: "eval" | "train" (the mode of the
    model during loss_and_grad). channels_last: NHWC memory order. amp: None | "bf16".
    dtype: "float32" (default) | "float64" (models and float arrays; for exact comparisons).
    compile: torch.compile the attack's forward+backward (falls back to eager if it fails).
    """
    return TorchBackend(device=device, attack_mode=attack_mode, channels_last=channels_last, compile=compile,
                        amp=amp, dtype=dtype)
