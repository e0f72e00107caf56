"""A pseudo-terminal that stands in for a USB serial adapter: clients open the slave side through a link
path (as they would open /dev/ttyACM0); the virtual bus reads and writes the master side.

The slave is put in raw mode (no echo, no line editing) and kept open by the bus itself, so a client may
close and reopen the port without the master seeing a hang-up. The link is a symlink made here; an
existing path is refused (never replaced), and on close the link is removed only if it still points at
this terminal.
"""

from __future__ import annotations

import os
import tty
from pathlib import Path

from vla.outputs import OutputError, describe


def check_link_free(link: str | Path, what: str = "--link") -> None:
    p = Path(link)
    if os.path.lexists(p):
        raise OutputError(
            f"{what} {p} exists ({describe(p) if p.exists() else 'a dangling link'}); the virtual bus never "
            "replaces a path it did not create: pick another path (or remove a leftover link yourself)"
        )
    if not p.parent.is_dir():
        raise OutputError(f"{what} {p}: the folder {p.parent} does not exist")


class PseudoTerminal:
    def __init__(self, link: str | Path | None = None):
        self.link = Path(link) if link is not None else None
        self.master = self.slave = -1
        self.tty_name = ""

    def open(self) -> None:
        if self.link is not None:
            check_link_free(self.link)
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)  # a reply nobody reads must never block the bus
        self.tty_name = os.ttyname(self.slave)
        if self.link is not None:
            try:
                os.symlink(self.tty_name, self.link)
            except OSError:
                self.close()
                raise

    @property
    def path(self) -> str:
        """What a client opens: the link, or the terminal itself when there is no link."""
        return str(self.link) if self.link is not None else self.tty_name

    def close(self) -> None:
        if self.link is not None and self.tty_name:
            try:
                if os.path.islink(self.link) and os.readlink(self.link) == self.tty_name:
                    os.unlink(self.link)
            except OSError:
                pass
        for fd in (self.master, self.slave):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.master = self.slave = -1
