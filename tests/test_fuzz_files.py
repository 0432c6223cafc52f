"""The fuzz target of docs/security.md: seeded mutants of a checkpoint, a model file and a corpus, through the API in-process.

Each mutant must give a result or one BadInput line: never another exception, never more than
MUTANT_SECONDS, and the process never more than MEMORY_HEADROOM beyond what it had (an address
space limit set for the test, so that an allocation past it fails the test instead of the machine).
"""

import random
import resource
import signal
import zipfile

import pytest

from charlstm.core.errors import BadInput
from charlstm.export.foreign import read_model
from charlstm.runtime import Model, generate
from charlstm.train.checkpoint import build_model
from charlstm.train.prepare import prepare
from conftest import markov_text

SEED = 20261202
MUTANT_SECONDS = 20
MEMORY_HEADROOM = 3 << 30


def mutate(data: bytes, rng: random.Random) -> bytes:
    """Byte flips, a cut, a spliced run of random bytes or a repeated block: what damage and malice look like."""
    data = bytearray(data)
    kind = rng.randrange(4)
    if kind == 0:
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 1:
        del data[rng.randrange(len(data)):]
    elif kind == 2:
        at = rng.randrange(len(data))
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    else:
        at, size = rng.randrange(len(data)), rng.randint(1, 256)
        data[at:at] = data[at:at + size] * rng.randint(2, 50)
    return bytes(data)


def mutate_member(path, rng: random.Random) -> bytes:
    """A zip (torch.save) with one member's bytes mutated, the archive itself well formed."""
    with zipfile.ZipFile(path) as archive:
        members = [(info.filename, archive.read(info.filename)) for info in archive.infolist()]
    index = rng.randrange(len(members))
    members[index] = (members[index][0], mutate(members[index][1], rng) or b"\0")
    out = path.with_name("mutant-archive.pt")
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members:
            archive.writestr(name, data)
    return out.read_bytes()


@pytest.fixture
def bounded():
    """Each call within MUTANT_SECONDS (SIGALRM), the process within MEMORY_HEADROOM more address space."""
    with open("/proc/self/status") as f:
        size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (size + MEMORY_HEADROOM, hard))

    def alarm(signum, frame):
        raise TimeoutError(f"a mutant took more than {MUTANT_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def outcome(call) -> str:
    signal.alarm(MUTANT_SECONDS)
    try:
        call()
        return "ok"
    except BadInput as e:
        assert str(e) and "\n" not in str(e)
        return "refused"
    finally:
        signal.alarm(0)


def test_mutant_checkpoints(tiny_checkpoint, tmp_path, bounded):
    rng, seen = random.Random(SEED), set()
    original, path = tiny_checkpoint.read_bytes(), tmp_path / "mutant.pt"
    for i in range(300):
        path.write_bytes(mutate_member(tiny_checkpoint, rng) if i % 2 else mutate(original, rng))
        seen.add(outcome(lambda: build_model(read_model(path).ckpt)))
    assert "refused" in seen


def test_mutant_model_files(tiny_onnx, bounded):
    rng, seen = random.Random(SEED + 1), set()
    original = tiny_onnx.read_bytes()
    for _ in range(300):
        data = mutate(original, rng)
        seen.add(outcome(lambda: generate(Model(data, threads=1), "ab", 5, seed=0)))
    assert "refused" in seen


def test_mutant_corpora(tmp_path, bounded):
    rng, seen = random.Random(SEED + 2), set()
    original = markov_text(4_000).encode() + "é\r\n".encode() * 50
    for i in range(150):
        corpus = tmp_path / f"c{i}.txt"
        corpus.write_bytes(mutate(original, rng))
        seen.add(outcome(lambda: prepare(corpus, cache_dir=tmp_path)))
    assert seen == {"ok", "refused"}
