"""How a training run uses its device: precision, memory layout, compilation, data placement.

None of these settings changes what is trained; they change how fast it trains (and,
for bf16, the rounding of the forward and backward passes, never of the weights).
"""
import contextlib
import os
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .options import check_choices, option, require

PRECISIONS = ("fp32", "bf16")
DATA_PLACEMENTS = ("auto", "yes", "no")
AUTO_YES_NO = ("auto", "yes", "no")
# Share of the device's free memory (host RAM on the CPU) the training images may take when
# data_on_device=auto; the rest is left for activations, which at 256 px dwarf the weights.
DATA_BUDGET_FRACTION = 0.5


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), where oneDNN's bf16
    convolutions outrun its fp32 ones: 1.44x for the default inpainter's training on two cores of
    an AMD EPYC with AVX512-BF16 (docs/speed.md)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own; private, so maybe absent
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


@dataclass(frozen=True)
class RuntimeOptions:
    """How a user asks a training run to use its device; each training process resolves them
    into a `Runtime` for the device it has (the process that starts training never touches CUDA).

    Like the device, these change how fast a model trains, not which model: bf16 autocast
    rounds activations, never the fp32 weights, as cuDNN's kernel choices already differ.
    """

    precision: str = option("auto", "auto: bf16 autocast on CUDA and on CPUs with native bf16 arithmetic, fp32 on "
                                    "other CPUs", ("auto", *PRECISIONS), affects_result=False)
    compile: str = option("auto", "torch.compile the networks; auto: on CUDA only", AUTO_YES_NO, affects_result=False)
    data_on_device: str = option("auto", "Hold the train split on the device (yes), stream it from the memory-mapped "
                                         "shards (no), or yes if it fits (auto)", DATA_PLACEMENTS, affects_result=False)
    data_workers: int = option(4, "DataLoader workers when streaming", affects_result=False)

    def __post_init__(self):
        check_choices(self)
        require(self.data_workers >= 0, f"data_workers must be >= 0, got {self.data_workers}")


@dataclass(frozen=True)
class Runtime:
    """Resolved settings of one training run on one device; build one with `Runtime.resolve`.

    precision: fp32, or bf16 autocast around forward passes (weights, optimizer state and
        losses stay fp32, so no gradient scaling is needed).
    channels_last: NHWC activations and weights, the layout cuDNN's tensor-core kernels and
        oneDNN's CPU kernels work in, so no convolution transposes its input.
    compile: torch.compile the networks (in place, so state dict keys stay unchanged).
    fused_optimizer: one fused kernel for all of Adam's parameter updates.
    data_on_device: hold every training image on the device (yes), stream them from the
        memory-mapped shards with DataLoader workers (no), or decide by size (auto).
    data_workers: DataLoader processes when streaming.
    """

    device: str = "cpu"
    precision: str = "fp32"
    channels_last: bool = True
    compile: bool = False
    fused_optimizer: bool = True
    data_on_device: str = "auto"
    data_workers: int = 4

    def __post_init__(self):
        require(self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        require(self.data_on_device in DATA_PLACEMENTS,
                 f"data_on_device must be one of {DATA_PLACEMENTS}, got {self.data_on_device!r}")
        require(self.data_workers >= 0, f"data_workers must be >= 0, got {self.data_workers}")
        try:
            kind = self.torch_device.type
        except RuntimeError:
            kind = None
        require(kind in ("cpu", "cuda"), f"device must be cpu or cuda[:N], got {self.device!r}")
        require(kind == "cpu" or torch.cuda.is_available(), f"device {self.device!r} asked for but CUDA is not available")

    @classmethod
    def resolve(cls, device: str = "auto", options: RuntimeOptions = RuntimeOptions()) -> "Runtime":
        """Fill in the 'auto' choices of `options` for the device at hand.

        auto device: CUDA when present. auto precision: bf16 on CUDA (tensor cores run it at
        twice the TF32 rate) and on CPUs that compute it natively (cpu_has_native_bf16), fp32 on
        other CPUs, which would emulate it. auto compile:
        on CUDA, where it fuses each batch norm with its ReLU (1.3x at 256 px, see
        docs/speed.md); not on the CPU, where compiling takes tens of seconds per phase on a
        few cores and what it gains depends on the CPU (nothing on the development machine).
        """
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        on_cuda = torch.device(device).type == "cuda"
        precision = {"auto": "bf16" if on_cuda or cpu_has_native_bf16() else "fp32"}.get(options.precision,
                                                                                          options.precision)
        compile = {"auto": on_cuda, "yes": True, "no": False}[options.compile]
        return cls(device=str(device), precision=precision, compile=compile, data_on_device=options.data_on_device,
                   data_workers=options.data_workers)

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self):
        """The context for forward passes: bf16 autocast, or nothing in fp32."""
        return torch.autocast(self.torch_device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    @contextlib.contextmanager
    def active(self):
        """Set the process-wide backend switches for this run, and put the old ones back after.

        CUDA: TF32 for the float32 matrix products that remain, and cuDNN's autotuner, which
        pays off because every step has the same shapes. CPU: one thread per usable core.
        """
        saved = (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision(), torch.get_num_threads())
        try:
            if self.torch_device.type == "cuda":
                torch.backends.cudnn.benchmark = True
                torch.set_float32_matmul_precision("high")
            else:
                torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
            yield self
        finally:
            torch.backends.cudnn.benchmark = saved[0]
            torch.set_float32_matmul_precision(saved[1])
            torch.set_num_threads(saved[2])

    def place(self, net: nn.Module) -> nn.Module:
        """Move a network to the device in this run's memory layout (before loading or optimizing it)."""
        return net.to(self.torch_device, memory_format=self.memory_format)

    def finish(self, net: nn.Module) -> nn.Module:
        """Compile a placed network in place when asked; its parameters and state dict are untouched."""
        if self.compile:
            net.compile()
        return net

    def adam(self, parameters, **options) -> torch.optim.Adam:
        # fused=None leaves PyTorch's default (the multi-tensor 'foreach' kernels on CUDA).
        return torch.optim.Adam(parameters, fused=True if self.fused_optimizer else None, **options)

    def data_budget_bytes(self) -> int:
        """How many bytes of training images data_on_device=auto may place on the device."""
        if self.torch_device.type == "cuda":
            free = torch.cuda.mem_get_info(self.torch_device)[0]
        else:
            try:
                free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            except (ValueError, OSError, AttributeError):  # no such counter here: assume nothing spare
                free = 0
        return int(free * DATA_BUDGET_FRACTION)

    def to_dict(self) -> dict:
        return asdict(self)
