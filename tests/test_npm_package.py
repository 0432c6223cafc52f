"""The npm package as an app gets it: `npm pack`, installed offline in a fresh folder, runs the README's snippet.

The app's lockfile is made from runtime/js's (onnxruntime-node and what it needs, at the versions
and integrity hashes `npm ci` put in npm's cache), so `npm ci --offline` installs it without a network.
"""

import base64
import hashlib
import json
import os
import shutil
import subprocess
import tarfile

import pytest

from charlstm.runtime import Model, beam_search, generate
from conftest import ROOT

pytestmark = pytest.mark.slow
JS = ROOT / "runtime" / "js"
ENV = {"ONNXRUNTIME_NODE_INSTALL": "skip"}


def _run(args, cwd, **kw):
    proc = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **ENV}, **kw)
    assert proc.returncode == 0, f"{args}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc.stdout


def _closure(lock: dict, name: str) -> dict:
    """The lock entries of `name` and everything it depends on, found as npm finds them (nearest node_modules)."""
    kept, todo = {}, [(name, "")]
    while todo:
        dep, at = todo.pop()
        while f"{at}/node_modules/{dep}".lstrip("/") not in lock:
            at = at.rsplit("/node_modules/", 1)[0] if "/node_modules/" in at else ""
        key = f"{at}/node_modules/{dep}".lstrip("/")
        if key not in kept:
            kept[key] = {k: v for k, v in lock[key].items() if k not in ("dev", "peer", "devOptional")}
            todo += [(d, key) for d in lock[key].get("dependencies", {})]
    return kept


def _app(folder, tarball):
    """package.json and package-lock.json of an app depending on the tarball and onnxruntime-node."""
    lock = json.loads((JS / "package-lock.json").read_text())["packages"]
    ours = json.loads((JS / "package.json").read_text())
    deps = {"charlstm": f"file:{tarball.name}", "onnxruntime-node": lock["node_modules/onnxruntime-node"]["version"]}
    sri = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    packages = {"": {"name": "app", "dependencies": deps}, **_closure(lock, "onnxruntime-node"),
                "node_modules/charlstm": {"version": ours["version"], "resolved": f"file:{tarball.name}", "integrity": sri,
                                          **{k: ours[k] for k in ("license", "bin", "engines", "peerDependencies",
                                                                  "peerDependenciesMeta")}}}
    (folder / "package.json").write_text(json.dumps({"name": "app", "private": True, "type": "module",
                                                     "dependencies": deps}))
    (folder / "package-lock.json").write_text(json.dumps({"name": "app", "lockfileVersion": 3, "requires": True,
                                                          "packages": packages}))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    npm = shutil.which("npm")
    if npm is None or not (JS / "node_modules" / "typescript").is_dir():
        pytest.fail("needs npm and runtime/js's dev dependencies: `npm ci` in runtime/js (the README's test command)")
    before = _run(["git", "status", "--porcelain", "--", "."], JS)
    app = tmp_path_factory.mktemp("app")
    name = _run([npm, "pack", "--pack-destination", app, "--silent"], JS).strip().splitlines()[-1]
    _app(app, app / name)
    _run([npm, "ci", "--offline", "--no-audit", "--no-fund"], app)
    assert _run(["git", "status", "--porcelain", "--", "."], JS) == before, "packing or installing changed the clone"
    shutil.copyfile(ROOT / "models" / "moliere.onnx", app / "moliere.onnx")
    return app, app / name


def readme_snippet() -> str:
    from test_docs import blocks

    return blocks(ROOT / "README.md", ("js",))[0]


def test_the_tarball_holds_the_runtime_its_cli_and_types_only(installed):
    _, tarball = installed
    with tarfile.open(tarball) as tar:
        names = {n.removeprefix("package/") for n in tar.getnames()}
        mode = tar.getmember("package/bin/charlstm-sample.mjs").mode
    assert {"package.json", "index.d.ts", "bin/charlstm-sample.mjs", "src/index.mjs"} <= names
    assert not {n for n in names if n.split("/")[0] in ("test", "bench", "demo", "node_modules", "test-artifacts")}
    assert mode & 0o111, "the CLI is executable in the tarball, as committed"


def test_the_readme_snippet_runs_in_the_fresh_folder(installed):
    app, _ = installed
    (app / "app.mjs").write_text(readme_snippet())
    expected = generate(Model(ROOT / "models" / "moliere.onnx"), "ALCESTE.", 300, seed=1)
    assert _run(["node", "app.mjs"], app) == expected + "\n"
    cli = _run([app / "node_modules" / ".bin" / "charlstm-sample", "moliere.onnx", "--prime", "ALCESTE.", "-n", 300,
                "--seed", 1, "--no-echo"], app)
    assert cli == expected + "\n"


def test_the_javascript_page_s_example_runs_there_too(installed):
    from test_docs import blocks

    app, _ = installed
    (app / "doc.mjs").write_text(blocks(ROOT / "docs" / "javascript.md", ("js",))[0])
    out = _run(["node", "doc.mjs"], app)
    model = Model(ROOT / "models" / "moliere.onnx")
    expected = generate(model, "ALCESTE.", 300, seed=1, top_p=0.95)
    assert out.startswith(expected + "\n")  # then the stream and the records
    beams = beam_search(model, "ORGON.\n", 60, beams=3, regex="(Oui|Non), [a-z ]+\\.")
    printed = [line.split(" ", 1) for line in out.splitlines()[-len(beams):]]  # the last lines: the beams
    assert [text for _, text in printed] == [b.text for b in beams]  # as Python ranks them
    assert [float(logprob) for logprob, _ in printed] == pytest.approx([b.logprob for b in beams], abs=1e-9)


def test_the_types_resolve_and_check(installed):
    """The README snippet as TypeScript, strict, through the package's exports; a wrong type is caught."""
    app, _ = installed
    tsc = JS / "node_modules" / ".bin" / "tsc"
    config = {"compilerOptions": {"module": "nodenext", "moduleResolution": "nodenext", "target": "es2022",
                                  "lib": ["es2022", "dom"], "strict": True, "noEmit": True, "skipLibCheck": True}}
    for name, source in {"good.ts": readme_snippet(),
                         "bad.ts": 'import { generate } from "charlstm";\nconst n: number = await generate(null!, "a");\n'
                         }.items():
        (app / name).write_text(source)
        (app / f"{name}.json").write_text(json.dumps({**config, "files": [name]}))
    _run([tsc, "-p", "good.ts.json"], app)
    bad = subprocess.run([str(tsc), "-p", "bad.ts.json"], cwd=app, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "not assignable to type 'number'" in bad.stdout

