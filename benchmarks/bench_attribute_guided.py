"""Claim: guided backprop is no slower than Captum's GuidedBackprop on ResNet-18, where both are correct (ReLU
only), and it is correct where Captum is not (Captum's rule touches nn.ReLU modules only: on SiLU networks it
returns the plain gradient).

torchvision ResNet-18 with random weights (no download), batch 1 and 8 at 224, same process, medians of REPEATS
after a warm-up; the machine may be loaded by other processes, so both are timed interleaved in ABBA order
(neither always runs second) and both wall-clock and process CPU time are reported: on a loaded machine the CPU
time is the steadier of the two (it does not count the time the process waited for a core).
Usage: python benchmarks/bench_attribute_guided.py [REPEATS] [THREADS]
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
repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 9
if len(sys.argv) > 2:
    torch.set_num_threads(int(sys.argv[2]))
torch.manual_seed(0)
net = torchvision.models.resnet18().eval()
model = convlens.Model.wrap(net, size=224)
norm = model.preprocess.normalize


def interleaved(a, b, n):
    """Medians of (wall a, wall b, cpu a, cpu b) over n rounds, ABBA order."""
    a(), b()
    wall: dict = {a: [], b: []}
    cpu: dict = {a: [], b: []}
    for i in range(n):
        for f in ((a, b) if i % 2 == 0 else (b, a)):
            t, c = time.perf_counter(), time.process_time()
            f()
            wall[f].append(time.perf_counter() - t)
            cpu[f].append(time.process_time() - c)
    med = statistics.median
    return med(wall[a]), med(wall[b]), med(cpu[a]), med(cpu[b])


print(f"threads={torch.get_num_threads()} repeats={repeats} (medians, ABBA interleaved)")
for batch in (1, 8):
    x = torch.rand(batch, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    t = torch.zeros(batch, dtype=torch.long) + 7
    xn = norm(x)
    a, b, ca, cb = interleaved(lambda x=x, t=t: guided_backprop(model, x, t),
                               lambda xn=xn, t=t: GuidedBackprop(net).attribute(xn, target=t), repeats)
    print(f"resnet18 batch {batch}: wall convlens {a:.3f} s captum {b:.3f} s ratio captum/convlens = {b / a:.2f}x   "
          f"cpu convlens {ca:.3f} s captum {cb:.3f} s ratio = {cb / ca:.2f}x")

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
