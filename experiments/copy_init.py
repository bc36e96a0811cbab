"""Does the q/k scales' initial sign pattern decide whether Megalodon learns to copy?

`python -m experiments.copy_init [--vocab 256] [--steps 300] [--scale-lr 1]` trains a small
Megalodon (2 layers, dim 128, one head of z 64, chunk 256) from scratch on the CPU, three times,
on rows that can only be predicted by copying: BOS, 100 random ids, the same 100 again, loss on
the second copy. The runs differ only in the q/k scales they start from: all 1 (the spec's init),
all +3 (products +9) and q +3 with k +-3 (products +-9, `engine.train.sign_attention_scales`).
Prints each run's loss every 50 steps and a final table (ln V is knowing nothing)."""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

from megadoc.engine import Megalodon, MegalodonConfig
from megadoc.training.loop import sign_attention_scales

SCALE = 3.0
COPY_LENGTH = 100
BATCH = 32
LR = 3e-3


def fresh_model(vocab: int, init: str) -> Megalodon:
    torch.manual_seed(0)
    config = MegalodonConfig(
        num_layers=2,
        model_dim=128,
        z_dim=64,
        value_dim=256,
        num_heads=1,
        ffn_hidden_dim=256,
        vocab_size=vocab,
        cema_ndim=8,
        chunk_size=256,
        norm_num_groups=8,
        swiglu=True,
        share_emb=True,
    )
    model = Megalodon(config)
    model.reset_parameters()
    if init == "positive":
        with torch.no_grad():
            for layer in model.layers:
                layer.mega.gamma.fill_(SCALE - 1)
    elif init == "signed":
        sign_attention_scales(model, SCALE, torch.Generator().manual_seed(0))
    return model


def copy_loss_curve(vocab: int, init: str, steps: int, scale_lr: float) -> list[tuple[int, float]]:
    """(step, loss on the second copy) every 50 steps and at the last."""
    model = fresh_model(vocab, init)
    scales = [p for n, p in model.named_parameters() if n.endswith("mega.gamma")]
    rest = [p for n, p in model.named_parameters() if not n.endswith("mega.gamma")]
    optimizer = torch.optim.AdamW(
        [{"params": rest, "lr_scale": 1.0}, {"params": scales, "lr_scale": scale_lr, "weight_decay": 0.0}],
        lr=LR,
        betas=(0.9, 0.95),
        weight_decay=0.01,
    )
    generator = torch.Generator().manual_seed(1)
    curve = []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = LR * group["lr_scale"] * min(1.0, (step + 1) / 20)
        ids = torch.randint(4, vocab, (BATCH, COPY_LENGTH), generator=generator)
        row = torch.cat([torch.ones(BATCH, 1, dtype=torch.long), ids, ids], 1)
        logits = model(row[:, :-1])
        loss = F.cross_entropy(logits[:, COPY_LENGTH:].flatten(0, 1), row[:, COPY_LENGTH + 1 :].flatten())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 50 == 0 or step == steps - 1:
            curve.append((step, loss.item()))
            print(f"{init:8s} step {step:4d} copy loss {loss.item():.3f}", flush=True)
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=256)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--scale-lr", type=float, default=1.0, help="multiplies the q/k scales' learning rate")
    parser.add_argument("--inits", default="spec,positive,signed")
    args = parser.parse_args()
    finals = {init: copy_loss_curve(args.vocab, init, args.steps, args.scale_lr)[-1] for init in args.inits.split(",")}
    print(f"\nvocabulary {args.vocab}, scales at {args.scale_lr:g}x, ln V = {math.log(args.vocab - 4):.2f}")
    print("| init | step | copy loss |\n|---|---|---|")
    for init, (step, loss) in finals.items():
        print(f"| {init} | {step} | {loss:.3f} |")


if __name__ == "__main__":
    main()
