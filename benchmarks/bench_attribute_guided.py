"""Claim: guided backprop is no slower than Captum's GuidedBackprop on ResNet-18, where both are correct (ReLU
only), and it is correct where Captum is not (Captum's rule touches nn.ReLU modules only: on SiLU networks it
returns the plain gradient).

torchvision ResNet-18 with random weights (no download), batch 1 and 8 at 224, same process, medians of REPEATS
after a warm-up; the machine may be loaded by other processes, so both are timed interleaved.
Usage: python benchmarks/bench_attribute_guided.py [REPEATS]
"""

import statistics
import sys
import time
import warnings

import torch
import torchvision
from captum.attr import GuidedBackprop

import convlens
from convlens.attribute import guided_backprop, vanilla_gradient

warnings.filterwarnings("ignore", module="captum")
repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
torch.manual_seed(0)
net = torchvision.models.resnet18().eval()
model = convlens.Model.wrap(net, size=224)
norm = model.preprocess.normalize


def interleaved(a, b, n):
    a(), b()
    ta, tb = [], []
    for _ in range(n):
        t = time.perf_counter()
        a()
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        b()
        tb.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


print(f"threads={torch.get_num_threads()} repeats={repeats} (medians, interleaved)")
for batch in (1, 8):
    x = torch.rand(batch, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    t = torch.zeros(batch, dtype=torch.long) + 7
    a, b = interleaved(lambda: guided_backprop(model, x, t),
                       lambda: GuidedBackprop(net).attribute(norm(x), target=t), repeats)
    print(f"resnet18 batch {batch}: convlens {a:.3f} s   captum {b:.3f} s   ratio captum/convlens = {b / a:.2f}x")

# agreement: Captum differentiates w.r.t. the normalised input; chain rule through (x - mean) / std
x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
t = torch.tensor([3, 5])
xn = norm(x).detach().requires_grad_(True)
cap = GuidedBackprop(net).attribute(xn, target=t)
std = torch.tensor(model.preprocess.std).view(1, 3, 1, 1)
ours = guided_backprop(model, x, t)
err = ((ours - cap / std).abs().max() / cap.abs().max()).item()
print(f"agreement on resnet18: max |convlens - captum| / max |captum| = {err:.2e}")

eff = torchvision.models.efficientnet_b0().eval()
m2 = convlens.Model.wrap(eff, size=224)
x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
cap = GuidedBackprop(eff).attribute(m2.preprocess.normalize(x).detach().requires_grad_(True), target=3)
van = vanilla_gradient(m2, x, 3) * std
g = guided_backprop(m2, x, 3) * std


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


print(f"efficientnet_b0 (SiLU): max |guided - gradient| / max |gradient|: captum {rel(cap, van):.2e}, "
      f"convlens {rel(g, van):.2e}")
