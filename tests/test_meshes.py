"""pontryx.meshes: every kind builds on the communicator with the exact measure,
files round-trip, gmsh is left as found, and bad descriptions are one-line
InputErrors keyed by the description's own key. Runs serially and under mpirun (all ranks alike)."""

from mpi4py import MPI  # noqa: I001  (must come first)

import math

import dolfinx
import gmsh
import pytest
import ufl
from dolfinx.io import XDMFFile

from pontryx.meshes import (
    MESH_KINDS,
    InputError,
    create_mesh,
    disk,
    mesh_summary,
    read_mesh,
    read_msh,
    read_xdmf,
    rectangle,
)
from pontryx.meshes.gmsh_domains import gmsh_session


def measure(mesh) -> float:
    """|Ω| = ∫ 1 dx, summed over the ranks of the mesh."""
    local = dolfinx.fem.assemble_scalar(dolfinx.fem.form(1 * ufl.dx(domain=mesh)))
    return mesh.comm.allreduce(local, op=MPI.SUM)


def num_cells(mesh) -> int:
    return mesh.topology.index_map(mesh.topology.dim).size_global


PI = math.pi
# (description, exact measure, rtol, cell name, gdim, global cells or None)
BUILDS = [
    ({"kind": "interval", "n": 8, "lower": -1.0, "upper": 2}, 3.0, 1e-12, "interval", 1, 8),
    ({"kind": "unit_interval", "n": 5}, 1.0, 1e-12, "interval", 1, 5),
    (
        {"kind": "rectangle", "n": [4, 2], "lower": [0, 0], "upper": [2, 1]},
        2.0,
        1e-12,
        "triangle",
        2,
        16,
    ),
    (
        {"kind": "rectangle", "n": 3, "lower": [-1, 0.5], "upper": [1, 2], "cell": "quadrilateral"},
        3.0,
        1e-12,
        "quadrilateral",
        2,
        9,
    ),
    ({}, 1.0, 1e-12, "triangle", 2, 512),  # the default: unit_square, 16×16 triangles
    ({"kind": "unit_square", "n": [3, 5], "diagonal": "crossed"}, 1.0, 1e-12, "triangle", 2, 60),
    ({"kind": "unit_square", "n": 4, "cell": "quadrilateral"}, 1.0, 1e-12, "quadrilateral", 2, 16),
    (
        {"kind": "box", "n": [2, 1, 1], "lower": [0, 0, 0], "upper": [1, 2, 3]},
        6.0,
        1e-12,
        "tetrahedron",
        3,
        12,
    ),
    ({"kind": "unit_cube", "n": 2, "cell": "hexahedron"}, 1.0, 1e-12, "hexahedron", 3, 8),
    ({"kind": "unit_cube", "n": [1, 2, 1]}, 1.0, 1e-12, "tetrahedron", 3, 12),
    ({"kind": "disk", "radius": 1.0, "h": 0.2}, PI, 0.02, "triangle", 2, None),
    ({"kind": "disk", "radius": 0.5, "h": 0.1}, PI / 4, 0.02, "triangle", 2, None),
    ({"kind": "annulus", "inner_radius": 0.5, "h": 0.15}, 0.75 * PI, 0.02, "triangle", 2, None),
    ({"kind": "lshape", "h": 0.2}, 0.75, 1e-12, "triangle", 2, None),
    ({"kind": "hole", "radius": 0.25, "h": 0.1}, 1 - PI / 16, 0.01, "triangle", 2, None),
]


@pytest.mark.parametrize(
    ("desc", "exact", "rtol", "cell", "gdim", "cells"),
    BUILDS,
    ids=[str(d.get("kind", "default")) + f"-{i}" for i, (d, *_) in enumerate(BUILDS)],
)
def test_kind_builds_with_exact_measure(comm, desc, exact, rtol, cell, gdim, cells):
    mesh = create_mesh(desc, comm)
    assert mesh.comm.size == comm.size
    assert measure(mesh) == pytest.approx(exact, rel=rtol)
    assert mesh.topology.cell_type.name == cell
    assert mesh.geometry.dim == gdim
    if cells is not None:
        assert num_cells(mesh) == cells
    summary = mesh_summary(mesh)
    assert summary.startswith(f"{cell} mesh: {num_cells(mesh)} cells")
    assert f"gdim {gdim}" in summary and "\n" not in summary


def test_every_kind_is_covered():
    assert {d.get("kind", "unit_square") for d, *_ in BUILDS} | {"file"} == set(MESH_KINDS)


@pytest.mark.parametrize("kind", ["unit_square", "disk"])
def test_comm_self_gives_a_whole_mesh_per_rank(kind):
    mesh = create_mesh(
        {"kind": kind, "n": 2} if kind == "unit_square" else {"kind": kind, "h": 0.3},
        MPI.COMM_WORLD,
    )
    whole = create_mesh(
        {"kind": kind, "n": 2} if kind == "unit_square" else {"kind": kind, "h": 0.3},
        MPI.COMM_SELF,
    )
    assert whole.comm.size == 1
    assert num_cells(whole) == num_cells(mesh)
    assert measure(whole) == pytest.approx(measure(mesh), rel=1e-12)


def test_gmsh_is_left_as_found(comm):
    assert not gmsh.isInitialized()
    first = disk(h=0.3, comm=comm)
    assert not gmsh.isInitialized()
    # A session the caller opened stays open, with its model and options.
    gmsh.initialize(readConfigFiles=False, interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", 1)
        gmsh.model.add("user")
        gmsh.option.setNumber("Mesh.MeshSizeFactor", 1.0)
        models = gmsh.model.list()
        second = disk(h=0.3, comm=comm)
        assert gmsh.isInitialized()
        assert gmsh.model.getCurrent() == "user"
        assert gmsh.model.list() == models
        assert gmsh.option.getNumber("General.Terminal") == 1
    finally:
        gmsh.finalize()
    assert num_cells(first) == num_cells(second)  # no state carried between calls


def test_xdmf_round_trip(comm, mpi_tmp_path):
    mesh = rectangle([3, 2], [0, 0], [2, 1], "quadrilateral", comm=comm)
    mesh.name = "width"
    path = mpi_tmp_path / "omega.xdmf"
    with XDMFFile(comm, str(path), "w") as f:
        f.write_mesh(mesh)
    for back in (
        read_xdmf(path, "width", comm=comm),
        read_mesh(str(path), name="width", comm=comm),
        create_mesh({"kind": "file", "path": str(path), "name": "width"}, comm),
    ):
        assert num_cells(back) == 6
        assert back.topology.index_map(0).size_global == 12
        assert back.topology.cell_type.name == "quadrilateral"
        assert measure(back) == pytest.approx(2.0, rel=1e-12)
    with pytest.raises(InputError, match=r"^name: no mesh 'mesh' in .*omega\.xdmf"):
        create_mesh({"kind": "file", "path": str(path)}, comm)


def test_xdmf_with_a_damaged_h5_is_one_line(comm, mpi_tmp_path, capfd):
    """A truncated .h5 beside its .xdmf: one InputError, and none of the HDF5-DIAG
    lines HDF5's own error stack printed to stderr before it."""
    mesh = rectangle([3, 2], [0, 0], [2, 1], "triangle", comm=comm)
    path = mpi_tmp_path / "omega.xdmf"
    with XDMFFile(comm, str(path), "w") as f:
        f.write_mesh(mesh)
    comm.Barrier()
    if comm.rank == 0:
        h5 = path.with_suffix(".h5")
        h5.write_bytes(h5.read_bytes()[:200])
    comm.Barrier()
    capfd.readouterr()
    with pytest.raises(InputError, match=r"^path: cannot read .*omega\.xdmf"):
        read_xdmf(path, "mesh", comm=comm)
    assert "HDF5-DIAG" not in capfd.readouterr().err


def _write_msh(comm, path, dim, groups):
    """Mesh a coarse rectangle [0,2]×[0,1] (dim 2) or box [0,1]²×[0,2] (dim 3) on rank 0."""
    if comm.rank == 0:
        with gmsh_session() as g:
            occ = g.model.occ
            tag = occ.addRectangle(0, 0, 0, 2, 1) if dim == 2 else occ.addBox(0, 0, 0, 1, 1, 2)
            occ.synchronize()
            if groups:
                g.model.addPhysicalGroup(dim, [tag], 7)
            g.option.setNumber("Mesh.MeshSizeMax", 0.5)
            g.model.mesh.generate(dim)
            g.write(str(path))
    comm.barrier()


@pytest.mark.parametrize(("dim", "groups"), [(2, True), (2, False), (3, True)])
def test_msh_round_trip(comm, mpi_tmp_path, dim, groups):
    path = mpi_tmp_path / "omega.msh"
    _write_msh(comm, path, dim, groups)
    for back in (
        read_msh(path, comm=comm),
        create_mesh({"kind": "file", "path": str(path)}, comm),
    ):
        assert back.geometry.dim == dim  # detected from the coordinates
        assert back.topology.dim == dim
        assert measure(back) == pytest.approx(2.0, rel=1e-12)
    assert read_msh(path, gdim=3, comm=comm).geometry.dim == 3
    assert not gmsh.isInitialized()


def test_extreme_accepted_extents_build(comm):
    """At the limits (coordinates ±1e50, widths 1e-12): a mesh with the exact measure."""
    wide = create_mesh({"kind": "box", "n": 1, "lower": [-1e50] * 3, "upper": [1e50] * 3}, comm)
    assert measure(wide) == pytest.approx(8e150, rel=1e-12)
    thin = create_mesh({"kind": "rectangle", "n": 2, "upper": [1.0, 1e-12]}, comm)
    assert measure(thin) == pytest.approx(1e-12, rel=1e-12)


@pytest.mark.parametrize("dim", [2, 3])
def test_msh_gdim_below_the_cell_dimension(comm, mpi_tmp_path, dim):
    """gdim 1 for a 2D mesh, 2 for a 3D one: keyed gdim, not UFL's ValueError."""
    path = mpi_tmp_path / "omega.msh"
    _write_msh(comm, path, dim, True)
    with pytest.raises(InputError) as info:
        create_mesh({"kind": "file", "path": str(path), "gdim": dim - 1}, comm)
    assert info.value.key == "gdim" and f"expected at least {dim}" in str(info.value)
    assert "\n" not in str(info.value) and not gmsh.isInitialized()
    assert read_msh(path, gdim=dim, comm=comm).geometry.dim == dim


def test_msh_gdim_that_drops_a_varying_coordinate(comm, mpi_tmp_path):
    """A surface that is not flat (a tilted square) cannot take gdim 2; a flat one
    off the plane z = 0 can (its constant z is dropped)."""
    tilted, flat = mpi_tmp_path / "tilted.msh", mpi_tmp_path / "flat.msh"
    if comm.rank == 0:
        for path, z in ((tilted, (0.0, 0.0, 1.0, 1.0)), (flat, (2.0,) * 4)):
            with gmsh_session() as g:
                geo = g.model.geo
                pts = [
                    geo.addPoint(x, y, zz)
                    for (x, y), zz in zip(((0, 0), (1, 0), (1, 1), (0, 1)), z, strict=True)
                ]
                lines = [geo.addLine(pts[i], pts[(i + 1) % 4]) for i in range(4)]
                geo.addPlaneSurface([geo.addCurveLoop(lines)])
                geo.synchronize()
                g.model.mesh.generate(2)
                g.write(str(path))
    comm.barrier()
    with pytest.raises(InputError) as info:
        create_mesh({"kind": "file", "path": str(tilted), "gdim": 2}, comm)
    assert info.value.key == "gdim" and "varying z" in str(info.value)
    assert create_mesh({"kind": "file", "path": str(flat), "gdim": 2}, comm).geometry.dim == 2


def test_cli_refuses_a_bad_gdim_and_a_zero_width(capsys, mpi_tmp_path):
    """validate, train: one line keyed mesh.*, exit 2, nothing written."""
    from test_cli import cli, write

    path = mpi_tmp_path / "omega.msh"
    _write_msh(MPI.COMM_WORLD, path, 2, True)
    base = (
        "model: {layers: 2, T: 1.0}\n"
        "data: {name: ellipses, n_train: 8, n_test: 4}\n"
        "training: {method: lmvm, max_iterations: 1}\n"
        "output: {plots: false, paraview: false}\n"
    )
    for mesh, key in (
        (f"{{kind: file, path: {path}, gdim: 1}}", "mesh.gdim"),
        ("{kind: interval, n: 3, lower: 0, upper: 1e-300}", "mesh.upper"),
        ("{kind: interval, n: 3, lower: -1e308, upper: 1e308}", "mesh.lower"),
    ):
        cfg = write(mpi_tmp_path / "c.yaml", f"mesh: {mesh}\n{base}")
        for command in ("validate", "train"):
            extra = ["--output", mpi_tmp_path / "o"] if command == "train" else []
            code, _, err = cli(capsys, command, cfg, *extra)
            assert code == 2 and err.startswith(f"config error: {key}: "), (command, err)
            assert err.count("\n") == 1 and "Traceback" not in err, err
            assert not (mpi_tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("missing.xdmf", None),
        ("missing.msh", None),
        ("garbage.xdmf", "not <xml"),
        ("garbage.msh", "hello world\n"),
        ("empty.msh", "$MeshFormat\n4.1 0 8\n$EndMeshFormat\n"),
        ("omega.vtk", "# vtk DataFile Version 2.0\n"),
    ],
)
def test_bad_files_name_the_path(comm, mpi_tmp_path, name, content):
    path = mpi_tmp_path / name
    if comm.rank == 0 and content is not None:
        path.write_text(content)
    comm.barrier()
    with pytest.raises(InputError) as info:
        create_mesh({"kind": "file", "path": str(path)}, comm)
    message = str(info.value)
    assert message.startswith("path: ") and name in message and "\n" not in message
    assert not gmsh.isInitialized()


INVALID = [
    ("unit_square", "mesh"),
    ({"kind": "sphere"}, "mesh.kind"),
    ({"kind": 3}, "mesh.kind"),
    ({"kind": "disk", "n": 4}, "mesh.n"),
    ({"kind": "unit_square", "radius": 1}, "mesh.radius"),
    ({"kind": "unit_square", "n": -3}, "mesh.n"),
    ({"kind": "unit_square", "n": 0}, "mesh.n"),
    ({"kind": "unit_square", "n": [4, 4, 4]}, "mesh.n"),
    ({"kind": "unit_square", "n": 2.5}, "mesh.n"),
    ({"kind": "unit_square", "n": True}, "mesh.n"),
    ({"kind": "interval", "n": [2, 3]}, "mesh.n"),
    ({"kind": "box", "n": [2, 2]}, "mesh.n"),
    ({"kind": "unit_cube", "n": [1, 0, 1]}, "mesh.n"),
    ({"kind": "rectangle", "lower": [0, 0], "upper": [1, 0]}, "mesh.upper"),
    ({"kind": "interval", "lower": 1.0, "upper": 1.0}, "mesh.upper"),
    ({"kind": "box", "upper": [1, 1, -1]}, "mesh.upper"),
    ({"kind": "rectangle", "lower": [0]}, "mesh.lower"),
    ({"kind": "rectangle", "upper": ["a", 1]}, "mesh.upper"),
    ({"kind": "interval", "lower": float("nan")}, "mesh.lower"),
    # widths that pass upper > lower but are not a usable extent (were DOLFINx
    # RuntimeErrors, or a MUMPS error of the random-field solver)
    ({"kind": "interval", "n": 3, "lower": 0, "upper": 1e-300}, "mesh.upper"),
    ({"kind": "rectangle", "upper": [1, 1e-300]}, "mesh.upper"),
    ({"kind": "box", "upper": [1, 1, 1e-320]}, "mesh.upper"),
    ({"kind": "interval", "n": 3, "lower": -1e308, "upper": 1e308}, "mesh.lower"),
    ({"kind": "rectangle", "lower": [0, 0], "upper": [1, 1e60]}, "mesh.upper"),
    ({"kind": "interval", "n": 3, "lower": 1e16, "upper": 1.0000000000000004e16}, "mesh.upper"),
    ({"kind": "unit_square", "cell": "tetrahedron"}, "mesh.cell"),
    ({"kind": "unit_cube", "cell": "triangle"}, "mesh.cell"),
    ({"kind": "unit_square", "cell": "quadrilateral", "diagonal": "crossed"}, "mesh.diagonal"),
    ({"kind": "unit_square", "diagonal": "up"}, "mesh.diagonal"),
    ({"kind": "disk", "h": 0}, "mesh.h"),
    ({"kind": "disk", "h": -0.1}, "mesh.h"),
    ({"kind": "disk", "h": "0.1"}, "mesh.h"),
    ({"kind": "disk", "h": float("inf")}, "mesh.h"),
    ({"kind": "disk", "radius": -1}, "mesh.radius"),
    ({"kind": "annulus", "inner_radius": 1.0, "outer_radius": 0.5}, "mesh.inner_radius"),
    ({"kind": "annulus", "inner_radius": 0.5, "outer_radius": 0.5}, "mesh.inner_radius"),
    ({"kind": "annulus", "inner_radius": 0}, "mesh.inner_radius"),
    ({"kind": "hole", "radius": 0.5}, "mesh.radius"),
    ({"kind": "lshape", "h": -1}, "mesh.h"),
    ({"kind": "lshape", "radius": 1}, "mesh.radius"),
    ({"kind": "file"}, "mesh.path"),
    ({"kind": "file", "path": ""}, "mesh.path"),
    ({"kind": "file", "path": 3}, "mesh.path"),
    ({"kind": "file", "path": "does-not-exist.xdmf"}, "mesh.path"),
    ({"kind": "file", "path": "omega.msh", "gdim": 4}, "mesh.gdim"),
    ({"kind": "file", "path": "omega.xdmf", "gdim": 2}, "mesh.gdim"),
    ({"kind": "file", "path": "omega.xdmf", "name": ""}, "mesh.name"),
]


@pytest.mark.parametrize(("desc", "field"), INVALID, ids=[f for _, f in INVALID])
def test_invalid_description_names_the_field(comm, desc, field):
    with pytest.raises(InputError) as info:
        create_mesh(desc, comm)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    key = field.removeprefix("mesh").removeprefix(".") or None  # keyed by its own key
    assert info.value.key == key and "\n" not in message and "mesh." not in message
    assert message.startswith(f"{key}: " if key else "expected a mapping")
