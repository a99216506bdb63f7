"""PyTorch autograd on the identical discrete model (see ``_peer.py``).

Runs in benchmarks/.venv-torch (CPU PyTorch, float64). The layers' controls are
separate leaf tensors, as in an ``nn.ModuleList`` ResNet, so that backward
writes each layer's gradient once.

    benchmarks/.venv-torch/bin/python benchmarks/peers/torch_peer.py PROBLEM.npz \
        [--reference REF.npz] [--repeats 3] [--threads T]
"""

from __future__ import annotations

import _peer
import torch


def main():
    args = _peer.arguments(__doc__.splitlines()[0])
    torch.set_num_threads(args.threads)
    P = _peer.load(args.problem)
    f64 = torch.float64
    m = torch.from_numpy(P["m"])[:, None]
    E, X = torch.from_numpy(P["E"]), torch.from_numpy(P["X"])
    y = torch.from_numpy(P["y"]).long()
    dt, alpha, beta = float(P["dt"]), float(P["alpha"]), float(P["beta"])
    L = P["W"].shape[0]
    W = [torch.tensor(P["W"][n], dtype=f64, requires_grad=True) for n in range(L)]
    b = [torch.tensor(P["b"][n], dtype=f64, requires_grad=True) for n in range(L)]
    C = torch.tensor(P["C"], dtype=f64, requires_grad=True)
    d = torch.tensor(P["d"], dtype=f64, requires_grad=True)
    wW, wb = m * m.T, m[:, 0]
    del P

    def regulariser():
        R = 0.0
        for th, w in ((W, wW), (b, wb)):
            if alpha:
                R = R + 0.5 * alpha * dt * sum(torch.sum(w * t * t) for t in th)
            if beta and L > 1:
                R = R + 0.5 * beta / dt * sum(
                    torch.sum(w * (th[n + 1] - th[n]) ** 2) for n in range(L - 1)
                )
        return R

    def value_and_grad():
        U = E @ X
        for n in range(L):
            U = U + dt * torch.tanh(W[n] @ (m * U) + b[n][:, None])
        Yhat = C.T @ (m * U) + d[:, None]
        J = torch.nn.functional.cross_entropy(Yhat.T, y) + regulariser()
        g = [t.numpy() for t in torch.autograd.grad(J, [*W, *b, C, d])]
        return J.item(), {"W": g[:L], "b": g[L : 2 * L], "C": g[-2], "d": g[-1]}

    N, S = E.shape[0], X.shape[1]

    ops = []  # the GEMM's operands, made at its first call (after the peak is read)

    def gemm():
        if not ops:
            ops.extend([torch.rand(N, N, dtype=f64), torch.rand(N, S, dtype=f64)])
            ops.append(torch.empty(N, S, dtype=f64))
        return torch.matmul(ops[0], ops[1], out=ops[2])

    _peer.run(f"torch {torch.__version__}", value_and_grad, _peer.rss_mb(), args, gemm, (N, S))


if __name__ == "__main__":
    main()
