"""Speed and memory of sampling one 256×256 image with the default model on this CPU.

    python benchmarks/bench_generator.py                 # the trained bundle if present, else random weights
    python benchmarks/bench_generator.py --threads 1     # torch threads (default: torch's own)
    python benchmarks/bench_generator.py --model DIR     # any model folder MedCF loads

Times 25-step DDIM with classifier-free guidance (the editor's setting: two denoiser
passes per step, batched) and, side by side, 25 steps unguided; both include text
encoding and decoding. Prints seconds (best of --repeats after one warm-up) and the
process's peak resident memory. Random weights cost exactly what trained ones do.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the bundle or random weights)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance-scale", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from medcf.models.default import CONFIG_NAME, DefaultGenerator
    from medcf.models.loaders import load_generator
    from medcf.models.sampling import sample

    bundle_models = Path(__file__).resolve().parents[1] / "monai_bundle" / "models"
    before = peak_rss_mib()
    if args.model is not None:
        generator, weights = load_generator(args.model), str(args.model)
    elif (bundle_models / CONFIG_NAME).is_file():
        generator, weights = load_generator(bundle_models), "trained bundle weights"
    else:
        torch.manual_seed(0)
        generator, weights = DefaultGenerator.build(), "random weights (same architecture and cost)"
    loaded = peak_rss_mib()
    prompt = "PA chest radiograph. Moderate left pleural effusion."
    size = generator.image_size
    parameters = {"unet": sum(p.numel() for p in generator.denoiser.parameters()),
                  "autoencoder": sum(p.numel() for p in generator.vae.parameters())}
    print(f"model: {generator.format} ({weights}); image {size[0]}x{size[1]}, latent "
          f"{generator.latent_channels}x{generator.latent_size[0]}x{generator.latent_size[1]}; parameters: "
          f"UNet {parameters['unet'] / 1e6:.1f} M, autoencoder {parameters['autoencoder'] / 1e6:.2f} M")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPU(s), "
          f"load average {os.getloadavg()[0]:.2f} (a shared machine slows every figure)")
    sample(generator, prompt, steps=1, guidance_scale=args.guidance_scale, progress=False)  # warm-up
    rows = []
    for label, guidance in (("guided (CFG %.1f)" % args.guidance_scale, args.guidance_scale), ("unguided", 1.0)):
        times = []
        for repeat in range(args.repeats):
            started = time.perf_counter()
            result = sample(generator, prompt, seed=repeat, steps=args.steps, guidance_scale=guidance, progress=False)
            times.append(time.perf_counter() - started)
        assert result.images.shape == (1, *size)
        rows.append((label, min(times), sorted(times)[len(times) // 2]))
    print(f"\n{args.steps}-step DDIM sampling of one {size[0]}x{size[1]} image (text encoding and decoding included)")
    print(f"{'':20s} {'best s':>8s} {'median s':>9s} {'s/step':>7s}")
    for label, best, median in rows:
        print(f"{label:20s} {best:8.2f} {median:9.2f} {best / args.steps:7.3f}")
    print(f"\npeak RSS: {peak_rss_mib():.0f} MiB (python + torch + libraries before loading: {before:.0f} MiB; "
          f"after loading the model and MiniLM: {loaded:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
