"""A measuring process driven line by line: each line sent is one turn, each line read back its result."""

import subprocess
from pathlib import Path


class Child:
    """`command` started with pipes; `ready`: it first prints "ready" once set up."""

    def __init__(self, command: list, cwd: Path | None = None, ready: bool = False):
        self.proc = subprocess.Popen([str(c) for c in command], cwd=cwd, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        if ready and self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the measuring process {command[1:2]} did not start")

    def ask(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()
