"""The training run of an inverse problem (:mod:`.inverse`): the same loop,
checkpoints, metrics and resume as any :class:`~.run.TrainingRun`, with the
inverse problem's outputs — the summary (misfit, discrepancy, relative L² error
of κ), ``inverse.npz``, the plots and the ParaView file
(:mod:`pontryx.solver.outputs.inverse`).
"""

from __future__ import annotations

from pontryx.solver.app.run import TrainingRun

__all__ = ["InverseRun"]


class InverseRun(TrainingRun):
    """A :class:`~.run.TrainingRun` of an inverse problem: the same loop, metrics,
    checkpoints and resume; its own summary, model file and outputs."""

    def _summary(self, status: str, reason: str, scored: bool = True) -> dict:
        summary = super()._summary(status, reason, scored)
        p = self.problem
        inv = self.config.inverse
        summary["inverse"] = {
            "physical_dofs": int(p.physical.N),
            "observations": int(p.observations.count),
            "sigma": float(p.observations.sigma),
            "noise": float(inv.noise),
            "pde_solves": int(p.pde.solves),
        }
        return summary

    def _write_model(self) -> None:
        from pontryx.solver.outputs import model_io

        problem, out = self.problem, self.config.output
        if out.model and problem.layout.writes:
            gdim = problem.physical.mesh.geometry.dim
            model_io.save_model(
                self.run_dir / "model.npz",
                problem.net,
                self.trainer.controls,
                task="regression",
                input_shape=(gdim,),
                classes=(),
            )
        if self.root and out.model:
            self.directory.register("model.npz")

    def _output_entries(self) -> dict[str, bool]:
        out, entries = self.config.output, {}
        if out.paraview.enabled:
            entries["paraview/inverse.bp"] = True
        if out.plots:
            entries |= {f"plots/{n}.png": False for n in ("kappa", "state", "curves")}
        return entries

    def _write_outputs(self) -> None:
        """inverse.npz, ParaView files and plots of κ and u (collective)."""
        from pontryx.solver.outputs import inverse as outputs

        problem, out = self.problem, self.config.output
        fields = outputs.gather_fields(problem, self.trainer.controls)  # collective
        if self.root:
            outputs.write_arrays(self.run_dir / "inverse.npz", fields)
            self.directory.register("inverse.npz")
        if out.paraview.enabled:
            outputs.write_paraview(problem, self.trainer.controls, self.run_dir / "paraview")
        if out.plots and self.root:
            outputs.plot_inverse(fields, self.metrics.rows, self.run_dir / "plots")

    def _say_done(self, summary: dict, reason: str, status: str) -> None:
        r = summary["train"]
        err = summary.get("kappa_error")
        self.progress.say(
            f"done: {summary['iterations']} iterations ({reason}; status {status}) in "
            f"{summary['time']:.1f} s; discrepancy {r['discrepancy']:.4f}"
            + (f", relative L² error of κ {err:.4f}" if err is not None else "")
        )
        self.progress.say(f"results in {self.run_dir}/: {', '.join(self._results())}")

    def _results(self) -> list[str]:
        names = super()._results()
        return [*names[:2], "inverse.npz", *names[2:]]
