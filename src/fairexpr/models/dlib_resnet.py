"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) in PyTorch, read without dlib.

The network (dlib's ``dnn_face_recognition_ex.cpp``, ``anet_type``): a 7x7/2 convolution (32) without padding,
affine, ReLU, a 3x3/2 max-pool without padding; residual stages 3 x 32, then down to 64 + 3 x 64, down to 128 +
2 x 128, down to 256 + 2 x 256, and a last down-block to 256; global mean; a bias-free fully connected layer to the
128-d face descriptor. A block is conv 3x3 (stride s) - affine - ReLU - conv 3x3 - affine; a stride-1 conv pads
1, dlib's stride-2 conv does not pad. A *down*-block adds its block output to a 2x2/2 average-pool of its input;
dlib's ``add_prev`` adds tensors of different shapes by zero-padding both to the larger one (channels and the
bottom/right of the map). ``affine_`` is batch norm folded into a per-channel scale and shift. 29 convolutions,
5.6 M parameters.

The ``.dat`` format (dlib's ``serialize``): an integer is one control byte (bit 7 = sign, low 4 bits = byte count)
then its magnitude little-endian; a float is a mantissa integer then an exponent integer (m * 2^e); a string is a
length then bytes; a tensor is a version integer (2), four dimensions (n, k, rows, cols) and raw little-endian
float32. The loss layer comes first, then the versions of the wrapper layers, then the layers from input to
output, each followed by its wrapper's flags and (empty) gradient tensors. :func:`read_dlib_dat` walks that
stream and returns every convolution's, affine's and the fc layer's tensors in input-to-output order, checking
each layer's configuration (kernel, stride, padding, channels) against the architecture above.

Input: dlib's ``input_rgb_image_sized<150>`` computes ``(p - mean_c) / 256`` from 0-255 RGB pixels with means
122.782 / 117.001 / 104.298, i.e. ``(x - mean_c / 255) / (256 / 255)`` for ``x = p / 255``; the model's
``pretrained_cfg`` states exactly that, so fairexpr's normalisation reproduces dlib's. A 1-channel model sums the
first convolution over the RGB channels and folds the channel-mean differences into its bias (exact: the stem
has no padding), so a grey face gives what dlib gives for the same face replicated to RGB.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .common import ZooModel, check_in_chans, resolve_head_options
from .layers import CBAM, CBAM_INITS
from .registry import ModelError, register_model

DLIB_MEAN_255 = (122.782, 117.001, 104.298)
DLIB_MEAN = [m / 255.0 for m in DLIB_MEAN_255]
DLIB_STD = [256.0 / 255.0] * 3
DAT_NAME = "dlib_face_recognition_resnet_model_v1.dat"
#: (channels, residual blocks after the down-block) per stage; stage 0 has no down-block
STAGES = ((32, 3, False), (64, 3, True), (128, 2, True), (256, 2, True), (256, 0, True))
#: smallest input side for which stage 2 / 3 / 4 (and the descriptor, = stage 4) still has a map to convolve
MIN_SIDE = {2: 31, 3: 55, 4: 103}


# ----------------------------------------------------------------------------------------- the .dat reader
class _Stream:
    def __init__(self, data: bytes, path: str) -> None:
        self.b, self.p, self.path = data, 0, path

    def fail(self, what: str) -> ModelError:
        return ModelError(f"{self.path}: not a dlib face-recognition model file ({what} at byte {self.p})")

    def int(self) -> int:
        if self.p >= len(self.b):
            raise self.fail("unexpected end of file")
        c = self.b[self.p]
        n = c & 0x0F
        if n > 8 or c & 0x70:
            raise self.fail(f"bad integer control byte {c:#x}")
        v = int.from_bytes(self.b[self.p + 1:self.p + 1 + n], "little")
        self.p += 1 + n
        return -v if c & 0x80 else v

    def float(self) -> float:
        m = self.int()
        e = self.int()
        return float(m) * 2.0 ** e

    def str(self) -> str:
        n = self.int()
        if not 0 <= n < 256:
            raise self.fail(f"string length {n}")
        s = self.b[self.p:self.p + n]
        self.p += n
        try:
            return s.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail("a layer name that is not text") from None

    def peek_name(self) -> str | None:
        """The layer name starting here, if a length-prefixed identifier starts here (without consuming it)."""
        b, p = self.b, self.p
        if p + 2 > len(b) or b[p] != 0x01 or not 3 <= b[p + 1] <= 30:
            return None
        t = b[p + 2:p + 2 + b[p + 1]]
        return t.decode() if t[:1].isalpha() and all(ch == 0x5F or chr(ch).isalnum() for ch in t) else None

    def bool(self) -> bool:
        c = self.b[self.p:self.p + 1]
        self.p += 1
        if c not in (b"0", b"1"):
            raise self.fail(f"bad boolean {c!r}")
        return c == b"1"

    def tensor(self) -> np.ndarray:
        if self.int() != 2:
            raise self.fail("tensor version is not 2")
        dims = [self.int() for _ in range(4)]
        n = int(np.prod(dims))
        if n < 0 or self.p + 4 * n > len(self.b):
            raise self.fail(f"tensor of {dims} runs past the end")
        a = np.frombuffer(self.b, "<f4", n, self.p).reshape(dims).copy()
        self.p += 4 * n
        return a

    def wrapper_tail(self) -> None:
        """What ``add_layer`` writes after its layer: three flags and three gradient/cache tensors."""
        for _ in range(3):
            self.bool()
        for _ in range(3):
            self.tensor()


def _alias(s: _Stream) -> tuple[int, ...]:
    if s.int() != 1:
        raise s.fail("alias_tensor version is not 1")
    return tuple(s.int() for _ in range(4))


def read_dlib_dat(path: str | Path) -> dict[str, Any]:
    """Every learned tensor of dlib's face-recognition ResNet, input to output:
    ``{"conv": [(weight [O, I, k, k], bias [O], stride, pad)], "affine": [(gamma [C], beta [C])], "fc": [128, 256]}``.
    Raises :class:`ModelError` naming the file on anything unexpected."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"dlib model file {str(path)!r} does not exist")
    s = _Stream(path.read_bytes(), str(path))
    s.int()  # add_loss_layer version
    if s.str() != "loss_metric_2":
        raise s.fail("the first layer is not loss_metric_2")
    s.float(), s.float()  # the metric loss's margin and distance threshold
    convs: list[tuple[np.ndarray, np.ndarray, int, int]] = []
    affines: list[tuple[np.ndarray, np.ndarray]] = []
    fc = None
    # the wrapper layers' version integers (add_layer: 2; tag/skip layers: 1) up to the input layer's name
    while s.peek_name() is None:
        s.int()
        if s.p >= len(s.b):
            raise s.fail("no input layer")
    if s.str() != "input_rgb_image_sized":
        raise s.fail("no input_rgb_image_sized layer")
    means = [s.float() for _ in range(3)]
    if not np.allclose(means, DLIB_MEAN_255, atol=1e-3):
        raise s.fail(f"input means {means}")
    s.int(), s.int()  # chip rows, cols (150)
    while s.p < len(s.b):
        if s.peek_name() is None:
            s.int()  # a tag/skip layer's version between layers
            continue
        name = s.str()
        if name == "con_4":
            params = s.tensor().reshape(-1)
            nf, nr, nc, sy, sx, py, px = (s.int() for _ in range(7))
            fshape = _alias(s)
            bshape = _alias(s)
            for _ in range(4):
                s.float()  # learning-rate / weight-decay multipliers
            if s.b[s.p:s.p + 1] not in (b"0", b"1"):
                s.int()  # use_bias in newer versions
            k = fshape[1]
            nw = nf * k * nr * nc
            if params.size != nw + nf or fshape != (nf, k, nr, nc) or bshape != (1, nf, 1, 1) or nr != nc or sy != sx or py != px:
                raise s.fail(f"convolution {len(convs)} configuration {fshape} stride {sy} pad {py}")
            convs.append((params[:nw].reshape(nf, k, nr, nc), params[nw:], int(sy), int(py)))
        elif name == "affine_":
            params = s.tensor().reshape(-1)
            g, b = _alias(s), _alias(s)
            s.int()  # mode (0: per channel)
            c = params.size // 2
            if g != (1, c, 1, 1) or b != (1, c, 1, 1):
                raise s.fail(f"affine {len(affines)} shapes {g} {b}")
            affines.append((params[:c], params[c:]))
        elif name == "fc_2":
            nout, nin = s.int(), s.int()
            w = s.tensor()
            wa, _ = _alias(s), _alias(s)  # weight alias, (unused) bias alias
            bias_mode = s.int()  # 1: no bias (fc_no_bias)
            for _ in range(4):
                s.float()
            if w.shape[:2] != (nin, nout) or wa != (nin, nout, 1, 1) or bias_mode != 1:
                raise s.fail(f"fc shape {w.shape}")
            fc = w.reshape(nin, nout).T.copy()  # dlib stores in x out
        elif name in ("relu_", "add_prev_"):
            pass
        elif name in ("max_pool_2", "avg_pool_2"):
            for _ in range(6):
                s.int()
        else:
            raise s.fail(f"unknown layer {name!r}")
        s.wrapper_tail()
    if len(convs) != 29 or len(affines) != 29 or fc is None:
        raise ModelError(f"{path}: expected 29 convolutions, 29 affine layers and one fc layer, found "
                         f"{len(convs)}, {len(affines)}, {0 if fc is None else 1}")
    return {"conv": convs, "affine": affines, "fc": fc}


def dlib_model_file() -> Path:
    """``dlib_face_recognition_resnet_model_v1.dat`` inside the installed ``face_recognition_models`` package
    (CC0; located without importing the package)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise ModelError("pretrained='dlib' needs the face_recognition_models package: pip install 'fairexpr[faces]' "
                         f"(or pass the path of {DAT_NAME})")
    f = Path(spec.origin).parent / "models" / DAT_NAME
    if not f.is_file():
        raise ModelError(f"{f} is missing; reinstall face_recognition_models")
    return f


# ----------------------------------------------------------------------------------------- the network
class Affine(nn.Module):
    """dlib's ``affine_``: ``y = gamma_c x + beta_c`` (batch norm folded); trainable like BatchNorm's affine."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: ``a + b`` over the larger shape, each zero-padded at the end of channels, rows, cols."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class Block(nn.Module):
    """conv 3x3 (stride s; dlib pads only stride-1 convs) - affine - ReLU - conv 3x3 - affine, plus the shortcut
    (identity, or a 2x2/2 average-pool for a down-block), summed by :func:`add_padded`, then ReLU."""

    def __init__(self, cin: int, cout: int, down: bool, cbam_reduction: int | None = None,
                 cbam_init: str = "paper") -> None:
        super().__init__()
        s = 2 if down else 1
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=s, padding=0 if down else 1)
        self.bn1 = Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.bn2 = Affine(cout)
        self.down = down
        # CBAM on the residual branch before the sum, as in cbam_resnet18's BasicBlock (CUCN)
        self.cbam = CBAM(cout, reduction=cbam_reduction, init=cbam_init) if cbam_reduction else None

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return y if self.cbam is None else self.cbam(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.residual(x)
        return F.relu(add_padded(y, F.avg_pool2d(x, 2, 2) if self.down else x))


class DlibResNet29(ZooModel):
    """dlib's face-recognition ResNet-29; ``forward_features`` -> the 256-d pooled embedding (or a middle stage's,
    ``feature_stage``), ``descriptor`` -> dlib's 128-d face descriptor. Inputs from 103 px (55 with ``feature_stage=3``,
    31 with 2: identity training discards expression in the last stages, so the middle ones are worth trying)."""

    _head_name = "head"

    def __init__(self, num_classes: int = 7, in_chans: int = 3, head: str = "linear", drop_rate: float | None = None,
                 head_kwargs: dict[str, Any] | None = None, feature_stage: int = 4, cbam_reduction: int | None = None,
                 cbam_init: str | None = None) -> None:
        super().__init__()
        name = "cbam_dlib_resnet29" if cbam_reduction else "dlib_resnet29"
        if cbam_reduction is not None and (isinstance(cbam_reduction, bool) or not isinstance(cbam_reduction, int)
                                           or cbam_reduction < 1):
            raise ModelError(f"{name}: cbam_reduction must be a positive int, got {cbam_reduction!r}")
        if cbam_init is not None and not cbam_reduction:
            raise ModelError(f"{name}: cbam_init={cbam_init!r} given to a network without CBAM (use cbam_dlib_resnet29)")
        if cbam_init is not None and cbam_init not in CBAM_INITS:
            raise ModelError(f"{name}: cbam_init must be one of {', '.join(CBAM_INITS)}, got {cbam_init!r}")
        self.cbam_init = cbam_init or "paper"
        in_chans = check_in_chans(name, in_chans)
        if feature_stage not in (2, 3, 4) or isinstance(feature_stage, bool):
            raise ModelError(f"{name}: feature_stage must be 2, 3 or 4 (the stage whose pooled map is the embedding), "
                             f"got {feature_stage!r}")
        self.head_kind, rate, self.head_kwargs = resolve_head_options(name, head, drop_rate, 0.0, head_kwargs)
        self.conv1 = nn.Conv2d(in_chans, 32, 7, stride=2, padding=0)
        self.bn1 = Affine(32)
        blocks, cin = [], 32
        for cout, n, down in STAGES:
            stage = (([Block(cin, cout, True, cbam_reduction, self.cbam_init)] if down else [])
                     + [Block(cout, cout, False, cbam_reduction, self.cbam_init) for _ in range(n)])
            blocks.append(nn.Sequential(*stage))
            cin = cout
        self.stages = nn.ModuleList(blocks)
        self.fc = nn.Linear(256, 128, bias=False)  # dlib's fc_no_bias: the face descriptor
        self.feature_stage = int(feature_stage)
        self.num_features = STAGES[self.feature_stage][0]
        self.num_classes = num_classes
        self.drop = nn.Dropout(rate)
        self.head = self._make_head(num_classes)
        self._finish_cfg((112, 112), in_chans, DLIB_MEAN, DLIB_STD)

    def forward_feature_map(self, x: torch.Tensor, stage: int | None = None) -> torch.Tensor:
        if (4 if stage is None else stage) >= len(self.stages):
            raise ModelError(f"dlib_resnet29: stage {4 if stage is None else stage} was dropped (drop_unused keeps stages "
                             f"0-{len(self.stages) - 1})")
        need = MIN_SIDE[4 if stage is None else max(2, stage)]
        if min(x.shape[-2:]) < need:
            raise ModelError(f"dlib_resnet29: input {tuple(x.shape[-2:])} is too small for stage {4 if stage is None else stage} "
                             f"(needs >= {need} px; feature_stage=3 works from {MIN_SIDE[3]}, 2 from {MIN_SIDE[2]})")
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2)
        for i, st in enumerate(self.stages):
            x = st(x)
            if stage is not None and i == stage:
                return x
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_feature_map(x, self.feature_stage).mean((2, 3))

    def descriptor(self, x: torch.Tensor) -> torch.Tensor:
        """dlib's 128-d face descriptor (``compute_face_descriptor`` on a 150x150 chip) of normalised input."""
        if self.fc is None:
            raise ModelError("dlib_resnet29: the descriptor layer was dropped (drop_unused); build the network anew")
        return self.fc(self.forward_feature_map(x).mean((2, 3)))

    def drop_unused(self) -> list[str]:
        """Delete what ``forward`` never runs below ``feature_stage`` 4: the later stages and the 128-d descriptor
        layer (feature_stage 3 keeps 4.4 of the 5.6 M parameters). For packing a trained network (the ensemble);
        afterwards ``descriptor`` and a full-depth ``forward_feature_map`` raise. Returns the dropped modules' names."""
        dropped = [f"stages.{i}" for i in range(self.feature_stage + 1, len(self.stages))]
        if dropped:
            self.stages = nn.ModuleList(list(self.stages)[:self.feature_stage + 1])
        if self.fc is not None and self.feature_stage < 4:
            self.fc = None
            dropped.append("fc")
        return dropped

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(features))

    def load_dlib(self, path: str | Path) -> dict[str, Any]:
        """Copy the ``.dat`` file's tensors into this network (1-channel: see the module docstring)."""
        t = read_dlib_dat(path)
        convs = [self.conv1] + [c for st in self.stages for b in st for c in (b.conv1, b.conv2)]
        affs = [self.bn1] + [a for st in self.stages for b in st for a in (b.bn1, b.bn2)]
        with torch.no_grad():
            for i, (conv, (w, b, stride, pad)) in enumerate(zip(convs, t["conv"])):
                w, b = torch.from_numpy(w), torch.from_numpy(b)
                if (conv.stride[0], conv.padding[0], conv.out_channels) != (stride, pad, w.shape[0]):
                    raise ModelError(f"{path}: convolution {i} is {tuple(w.shape)} stride {stride} pad {pad}, the "
                                     f"network expects {conv.out_channels} channels stride {conv.stride[0]} pad {conv.padding[0]}")
                if i == 0 and conv.in_channels == 1:
                    m = torch.tensor(DLIB_MEAN, dtype=torch.float64)
                    shift = (w.double() * (m.mean() - m).view(1, 3, 1, 1)).sum((1, 2, 3)) / DLIB_STD[0]
                    b = (b.double() + shift).float()
                    w = w.sum(1, keepdim=True)
                conv.weight.copy_(w)
                conv.bias.copy_(b)
            for aff, (g, b) in zip(affs, t["affine"]):
                aff.weight.copy_(torch.from_numpy(g))
                aff.bias.copy_(torch.from_numpy(b))
            self.fc.weight.copy_(torch.from_numpy(t["fc"]))
        fresh = [n for n, _ in self.named_parameters() if ".cbam." in n]
        return {"source": str(path), "convolutions": len(convs), "affine": len(affs), "descriptor": "fc 256->128",
                "fresh": fresh, "head": "freshly initialised"} | ({"cbam_init": self.cbam_init} if fresh else {})


def _build(num_classes: int, pretrained: str | Path | None, **kwargs: Any) -> DlibResNet29:
    model = DlibResNet29(num_classes=num_classes, **kwargs)
    if pretrained is not None:
        p = dlib_model_file() if str(pretrained) == "dlib" else Path(pretrained)
        if p.suffix == ".dat":
            model.load_report = model.load_dlib(p)  # type: ignore[assignment]
        else:
            from .common import load_pretrained

            model.load_report = load_pretrained(model, p, first_conv="conv1", in_chans=model.pretrained_cfg["in_chans"],
                                                fresh_markers=(".cbam.",))
    return model


@register_model("cbam_dlib_resnet29", description="dlib_resnet29 with CBAM on every residual branch (CUCN from "
                                                   "face-recognition weights; CBAM freshly initialised; "
                                                   "cbam_init: paper | identity)",
                min_input_size=(MIN_SIDE[4], MIN_SIDE[4]), pretrained_names=("dlib",))
def cbam_dlib_resnet29(num_classes: int = 7, pretrained: str | Path | None = None, cbam_reduction: int = 16,
                       cbam_init: str = "paper", **kwargs: Any) -> DlibResNet29:
    """``cbam_init``: "paper" (sigmoid gates, default init) or "identity" (gates 2 sigmoid, starting at exactly 1, so
    the network starts as dlib's; see :mod:`fairexpr.models.layers`)."""
    return _build(num_classes, pretrained, cbam_reduction=cbam_reduction, cbam_init=cbam_init, **kwargs)


@register_model("dlib_resnet29", description="dlib's face-recognition ResNet-29 (public-domain .dat, read without dlib); "
                                              "pretrained='dlib' finds it in face_recognition_models", min_input_size=(MIN_SIDE[4], MIN_SIDE[4]),
                pretrained_names=("dlib",))
def dlib_resnet29(num_classes: int = 7, pretrained: str | Path | None = None, **kwargs: Any) -> DlibResNet29:
    return _build(num_classes, pretrained, **kwargs)
