"""Langevin against its Gibbs density, and SGD's stationary spread, on a training
problem reduced to two free controls.

The problem: ellipses (S samples), a dense network on the unit square at its
initial controls θ₀, everything frozen except two directions of the readout,
C = C₀ + a₁V₁ + a₂V₂ (V_i: canonical normal draws, combined so that the logit
gaps they make are white over the samples); then Ŷ_s(a) = Z_s + a₁P₁ₛ + a₂P₂ₛ
with P_i = V_iᵀ M_L U^{N_t} from one forward sweep, and J(a) = (1/S) Σ_s ℓ(Ŷ_s(a), y_s)
is pontryx's J(θ₀ + a·V) up to the constant R(θ₀) (checked to 1e-12 at two
points). J is convex but not quadratic (cross-entropy grows linearly far out).

(b) Langevin. K chains of a ← a − η∇J(a) + √(2ητ) ξ (the update of ``langevin``
in these two coordinates; the trainer's own update on a quadratic J is in
tests/test_langevin.py) for step sizes h = η λ_max (λ the eigenvalues of ∇²J at
the minimiser), from the minimiser, after a burn-in of 10 relaxation times. The
histogram of all chains' iterates on a 30 × 30 box of ±5 Laplace standard
deviations is compared with the Gibbs density ∝ exp(−J/τ) integrated over the
same bins on a 10× finer grid: total variation TV = ½ Σ|p̂ − p| and KL(p̂‖p).
The floor column is the TV of as many exact i.i.d. draws from the grid density as
the chains hold effectively independent samples if the slowest mode's relaxation
time governed every bin (K × steps / 2 relaxation times): a conservative (high)
estimate of what sampling noise alone gives — the measured TV goes below it. The weak error of
Euler–Maruyama is measured noise-free enough in the covariance: ‖Ĉ − C_π‖/‖C_π‖
with C_π the Gibbs covariance on the grid; expected O(η).

(c) SGD. The same J; minibatches of B samples; at the minimiser a* with Hessian H
and per-sample gradient covariance Σ₁ = (1/S) Σ_s g_s g_sᵀ, the SDE model of SGD
dθ = −∇J dt + √(η Σ_B) dW predicts the stationary covariance C with
HC + CH = η Σ_B (Σ_B = Σ₁/B for batches drawn with replacement;
(S − B)/((S − 1)B) Σ₁ for one batch without replacement); the linearised
discrete recursion gives C = (I − ηH) C (I − ηH) + η² Σ_B. Measured over K chains
(K/2 chains, 30 relaxation times after a burn-in of 10) with i.i.d. batches
(with replacement) and with pontryx's sampler (epochs of a
seeded permutation, ``Minibatches``: random reshuffling, whose noise sums to zero
over an epoch and so spreads less once an epoch is shorter than the relaxation).

Plot: benchmarks/out/langevin_gibbs.png (histograms against the density, TV vs h).

    .venv/bin/python benchmarks/langevin_gibbs.py [--smoke | --full]
"""

from __future__ import annotations

import math

from mpi4py import MPI

import _common as C
import numpy as np
import scipy.linalg

SETTINGS = {
    "smoke": {"S": 40, "K": 200, "steps": 100, "hs": [0.8, 0.4], "tau": 0.1, "sgd": [(0.5, 4)]},
    "quick": {
        "S": 100,
        "K": 4000,
        "steps": 1000,
        "hs": [0.8, 0.4, 0.2, 0.1, 0.05],
        "tau": 0.1,
        "sgd": [(0.2, 1), (0.2, 5), (0.5, 5), (0.5, 20)],
    },
    "full": {
        "S": 100,
        "K": 20000,
        "steps": 2000,
        "hs": [0.8, 0.4, 0.2, 0.1, 0.05, 0.025],
        "tau": 0.1,
        "sgd": [(0.2, 1), (0.2, 5), (0.5, 5), (0.5, 20), (1.0, 20)],
    },
}
BINS, FINE, WIDTH = 30, 10, 5.0


class Reduced:
    """J(a) and its per-sample gradients for a batch of points a (K × 2)."""

    def __init__(self, cfg, seed=0):
        from pontryx.meshes import create_mesh
        from pontryx.solver import ContinuumNetwork, ReducedFunctional, WidthSpace
        from pontryx.solver.data import load_dataset
        from pontryx.solver.model.random import canonical_normal

        ds = load_dataset({"name": "ellipses", "n_train": cfg["S"], "n_test": 10, "seed": 0})
        space = WidthSpace(create_mesh({"kind": "unit_square", "n": 4}, MPI.COMM_SELF))
        net = ContinuumNetwork(space, 2, 2, layers=4, T=2.0)
        theta = net.init_controls(seed=0, gain=1.0)
        rf = ReducedFunctional(net, ds.X_train, ds.y_train, alpha=1e-4)
        Yhat, (U,) = net.forward(theta, rf.X, keep=[net.layers])
        rng = np.random.default_rng(seed)
        V = [canonical_normal(rng, net, theta.subset("C"))["C"] for _ in range(2)]
        m = space.m[:, None]
        P = np.stack([v.T @ (m * U) for v in V])  # 2 × n_out × S
        gap = P[:, 1] - P[:, 0]  # the logit gaps the directions make (2 × S)
        W = np.linalg.inv(np.linalg.cholesky(gap @ gap.T / gap.shape[1]))  # whitened gaps
        self.V = [W[i, 0] * V[0] + W[i, 1] * V[1] for i in range(2)]
        self.P = np.einsum("ij,jos->ios", W, P)
        self.Z, self.y, self.S = Yhat, rf.y, rf.S
        # the vectorised J is pontryx's J(θ₀ + a·V) − R(θ₀)
        R = rf.regulariser(theta)
        for a in ([0.3, -0.7], [-1.2, 0.4]):
            th = theta.copy()
            th["C"] = th["C"] + a[0] * self.V[0] + a[1] * self.V[1]
            assert abs(rf(th) - R - self.value(np.array([a]))[0]) < 1e-12
        net.destroy()

    def logits(self, a, idx=None):
        """(K × n_out × S') logits of the points a at samples idx (all; or K × B)."""
        P, Z = self.P, self.Z
        if idx is None:
            return Z[None] + np.einsum("ki,ios->kos", a, P)
        Zi = Z[:, idx].transpose(1, 0, 2)  # K × n_out × B
        Pi = P[:, :, idx].transpose(2, 0, 1, 3)  # K × 2 × n_out × B
        return Zi + np.einsum("ki,kios->kos", a, Pi)

    def _ce(self, L, y):
        L = L - L.max(axis=1, keepdims=True)
        logsum = np.log(np.exp(L).sum(axis=1))
        picked = np.take_along_axis(L, y[:, None, :], axis=1)[:, 0]
        G = np.exp(L - logsum[:, None])
        np.put_along_axis(G, y[:, None, :], np.take_along_axis(G, y[:, None, :], axis=1) - 1, 1)
        return logsum - picked, G  # per-sample loss (K × S'), ∂ℓ/∂logits

    def value(self, a):
        loss, _ = self._ce(self.logits(a), np.broadcast_to(self.y, (len(a), self.S)))
        return loss.mean(axis=1)

    def gradient(self, a, idx=None):
        """∇J(a) (idx None) or the minibatch gradient over idx (K × B), K × 2."""
        y = self.y if idx is None else self.y[idx]
        y = np.broadcast_to(y, (len(a), self.S)) if idx is None else y
        _, G = self._ce(self.logits(a, idx), y)
        if idx is None:
            return np.einsum("kos,ios->ki", G, self.P) / self.S
        Pi = self.P[:, :, idx].transpose(2, 0, 1, 3)
        return np.einsum("kos,kios->ki", G, Pi) / idx.shape[1]

    def per_sample(self, a):
        """g_s(a) for one point a: S × 2."""
        _, G = self._ce(self.logits(a[None]), self.y[None])
        return np.einsum("os,ios->si", G[0], self.P)

    def hessian(self, a, h=1e-5):
        return np.stack(
            [
                (self.gradient((a + h * e)[None]) - self.gradient((a - h * e)[None]))[0] / (2 * h)
                for e in np.eye(2)
            ]
        )

    def minimiser(self):
        a = np.zeros(2)
        for _ in range(50):
            step = np.linalg.solve(self.hessian(a), self.gradient(a[None])[0])
            a -= step
            if np.linalg.norm(step) < 1e-12:
                break
        return a


def gibbs(J, a_star, H, tau):
    """Grid, bin edges and the Gibbs density integrated over the bins (and its covariance)."""
    sd = np.sqrt(np.diag(np.linalg.inv(H)) * tau)
    edges = [
        np.linspace(c - WIDTH * s, c + WIDTH * s, BINS + 1) for c, s in zip(a_star, sd, strict=True)
    ]
    n = BINS * FINE
    centres = [0.5 * (e[:-1] + e[1:]) for e in (np.linspace(e[0], e[-1], n + 1) for e in edges)]
    A1, A2 = np.meshgrid(*centres, indexing="ij")
    pts = np.stack([A1.ravel(), A2.ravel()], axis=1)
    Jg = np.concatenate([J.value(pts[i : i + 20000]) for i in range(0, len(pts), 20000)])
    w = np.exp(-(Jg - Jg.min()) / tau)
    w /= w.sum()
    mean = w @ pts
    cov = (pts - mean).T @ ((pts - mean) * w[:, None])
    p = w.reshape(n, n).reshape(BINS, FINE, BINS, FINE).sum(axis=(1, 3))
    return edges, p, mean, cov, (pts, w)


def distances(counts, p):
    q = counts / counts.sum()
    tv = 0.5 * np.abs(q - p).sum()
    mask = q > 0
    kl = float(np.sum(q[mask] * np.log(q[mask] / np.maximum(p[mask], 1e-300))))
    return tv, kl


def langevin(J, a_star, H, tau, h, cfg, edges, rng):
    lam = np.linalg.eigvalsh(H)
    eta = h / lam.max()
    relax = 1.0 / (eta * lam.min())  # steps per relaxation time of the slowest mode
    burn, steps = int(10 * relax), int(cfg["steps"] * relax / 10) + 1
    a = np.repeat(a_star[None], cfg["K"], axis=0)
    noise = math.sqrt(2 * eta * tau)
    counts = np.zeros((BINS, BINS))
    s1, s2, n = np.zeros(2), np.zeros((2, 2)), 0
    for k in range(burn + steps):
        a = a - eta * J.gradient(a) + noise * rng.standard_normal(a.shape)
        if k >= burn:
            counts += np.histogram2d(a[:, 0], a[:, 1], bins=edges)[0]
            s1 += a.sum(axis=0)
            s2 += a.T @ a
            n += len(a)
    mean = s1 / n
    return counts, s2 / n - np.outer(mean, mean), eta, steps


def floor_tv(p, total, rng):
    """TV of ``total`` exact i.i.d. draws from the bin probabilities p."""
    draws = rng.multinomial(int(total), p.ravel()).reshape(p.shape)
    return distances(draws, p)[0]


def sgd(J, a_star, eta, B, cfg, rng, reshuffle):
    """Stationary covariance of minibatch SGD over K chains."""
    K, S = cfg["K"] // 2, J.S
    a = np.repeat(a_star[None], K, axis=0)
    lam = np.linalg.eigvalsh(J.hessian(a_star))
    relax = 1.0 / (eta * lam.min())
    burn, steps = int(10 * relax), int(30 * relax) + 1  # 30 relaxation times
    per_epoch = S // B
    s1, s2, n = np.zeros(2), np.zeros((2, 2)), 0
    for k in range(burn + steps):
        if reshuffle:  # each chain: epochs of its own permutation (Minibatches)
            j = k % per_epoch
            if j == 0:
                perm = np.argsort(rng.random((K, S)), axis=1)
            idx = perm[:, j * B : (j + 1) * B]
        else:
            idx = rng.integers(0, S, (K, B))
        a = a - eta * J.gradient(a, idx)
        if k >= burn:
            s1 += a.sum(axis=0)
            s2 += a.T @ a
            n += K
    mean = s1 / n
    return s2 / n - np.outer(mean, mean)


def plot(path, edges, p, runs, hs, tvs, floors):
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    ext = [edges[0][0], edges[0][-1], edges[1][0], edges[1][-1]]
    axes[0].imshow(p.T, origin="lower", extent=ext, aspect="auto", cmap="viridis")
    axes[0].set_title("Gibbs density ∝ exp(−J(a)/τ)")
    big = runs[0]
    axes[1].imshow((big / big.sum()).T, origin="lower", extent=ext, aspect="auto", cmap="viridis")
    axes[1].set_title(f"Langevin histogram, h = {hs[0]:g}")
    for ax in axes[:2]:
        ax.set_xlabel("a₁")
        ax.set_ylabel("a₂")
    axes[2].loglog(hs, tvs, "o-", label="TV(histogram, Gibbs)")
    axes[2].loglog(hs, floors, "k:", label="sampling floor (conservative)")
    axes[2].loglog(hs, tvs[0] * np.asarray(hs) / hs[0], color="0.5", lw=0.8, label="slope 1")
    axes[2].set_xlabel("h = η λ_max")
    axes[2].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[2].set_title("Euler–Maruyama bias")
    axes[2].legend(fontsize=7)
    axes[2].grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> str:
    args = C.arguments(__doc__, argv)
    cfg = SETTINGS[C.mode(args)]
    rng = np.random.default_rng(1)
    with C.limit_threads(args.threads):
        J = Reduced(cfg)
        a_star = J.minimiser()
        H = J.hessian(a_star)
        tau = cfg["tau"]
        edges, p, _mean_pi, cov_pi, _ = gibbs(J, a_star, H, tau)
        laplace = tau * np.linalg.inv(H)
        rows, runs, tvs, floors = [], [], [], []
        t = C.now()
        for h in cfg["hs"]:
            counts, cov, eta, steps = langevin(J, a_star, H, tau, h, cfg, edges, rng)
            tv, kl = distances(counts, p)
            ess = cfg["K"] * cfg["steps"] / 20  # K chains × (steps / 2 relaxation times)
            fl = floor_tv(p, ess, rng)
            err = np.linalg.norm(cov - cov_pi) / np.linalg.norm(cov_pi)
            rows.append([h, eta, steps, tv, kl, fl, err, counts.sum() / max(counts.sum(), 1)])
            runs.append(counts)
            tvs.append(tv)
            floors.append(fl)
        seconds = C.now() - t
        for r in rows:
            r.pop()  # (kept the row length uniform above)
        tv_order = C.fit_exponent(cfg["hs"], tvs)
        cov_order = C.fit_exponent(cfg["hs"], [r[6] for r in rows])
        gauss = np.linalg.norm(laplace - cov_pi) / np.linalg.norm(cov_pi)
        # (c) SGD
        Sigma1 = np.cov(J.per_sample(a_star).T, bias=True)
        sgd_rows = []
        for eta, B in cfg["sgd"]:
            with_repl = Sigma1 / B
            without = Sigma1 * (J.S - B) / ((J.S - 1) * B)
            sde = scipy.linalg.solve_continuous_lyapunov(H, eta * with_repl)  # HC + CH = ηΣ
            A = np.eye(2) - eta * H
            disc = scipy.linalg.solve_discrete_lyapunov(A, eta**2 * with_repl)
            disc_wo = scipy.linalg.solve_discrete_lyapunov(A, eta**2 * without)
            iid = sgd(J, a_star, eta, B, cfg, rng, reshuffle=False)
            rr = sgd(J, a_star, eta, B, cfg, rng, reshuffle=True)
            lam = np.linalg.eigvalsh(H)
            sgd_rows.append(
                [
                    eta,
                    B,
                    1.0 / (eta * lam.min()),
                    J.S // B,
                    np.trace(sde),
                    np.trace(disc),
                    np.trace(iid),
                    np.linalg.norm(iid - disc) / np.linalg.norm(disc),
                    np.trace(disc_wo),
                    np.trace(rr),
                ]
            )
    png = C.OUT / "langevin_gibbs.png"
    plot(png, edges, p, runs, cfg["hs"], tvs, floors)
    lam = np.linalg.eigvalsh(H)
    body = (
        f"Ellipses, S = {J.S}, dense network (unit square n = 4, 4 layers, T = 2) at its "
        f"initial controls; free: two readout directions a ∈ R² (minimiser a* = "
        f"({a_star[0]:.3f}, {a_star[1]:.3f}), ∇²J(a*) eigenvalues {lam[0]:.3g}, {lam[1]:.3g}); "
        f"τ = {tau:g}. The Gibbs density is not Gaussian: the Laplace covariance τH⁻¹ "
        f"differs from the Gibbs covariance by {gauss:.1%}. {cfg['K']} chains, "
        f"{BINS}×{BINS} bins on ±{WIDTH:g} Laplace standard deviations. Plot: "
        f"`benchmarks/out/{png.name}`.\n\n"
        "**(b) Langevin against exp(−J/τ).**\n\n"
        + C.table(
            ["h = ηλ_max", "η", "steps", "TV", "KL", "TV floor (sampling)", "‖Ĉ − C_π‖/‖C_π‖"],
            rows,
        )
        + "\n\nFitted order of TV in h (all steps): "
        f"**{tv_order:.2f}**; of the covariance error (all): **{cov_order:.2f}** "
        f"(Euler–Maruyama's weak order: 1). {seconds:.0f} s.\n\n"
        "**(c) SGD's stationary spread against the minibatch-noise prediction** "
        "(traces of 2 × 2 covariances; relaxation = 1/(ηλ_min) steps):\n\n"
        + C.table(
            [
                "η",
                "B",
                "relaxation",
                "batches/epoch",
                "SDE tr C",
                "discrete tr C",
                "i.i.d. batches tr Ĉ",
                "‖Ĉ − C‖/‖C‖",
                "discrete w/o repl. tr C",
                "reshuffled (Minibatches) tr Ĉ",
            ],
            sgd_rows,
        )
    )
    return C.publish("Langevin and SGD against their stationary laws", body)


if __name__ == "__main__":
    main()
