"""pytest glue for output_folder.py: a run with --certify-output owns that folder."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Union

import pytest

from .output_folder import OutputFolder, OutputFolderError, inputs_of


class OwnedOutput:
    """--certify-output is this run's alone (output_folder.py): it writes into a staging folder, JUnit's
    and pytest-html's files inside the output too, and the folder is put in place once the run is
    complete. An interrupted or failed run leaves the earlier run as it was."""

    NAME = "vfio-certify-output-folder"

    @classmethod
    def take(cls, config: pytest.Config, output: Path) -> "OwnedOutput":
        try:
            return cls(config, output)
        except OutputFolderError as exc:
            raise pytest.UsageError(str(exc)) from None

    def __init__(self, config: pytest.Config, output: Path):
        self.folder = OutputFolder(output, inputs_of(config.option))
        staging = self.folder.open()
        self.moved: dict[Path, Path] = {}  # staging path -> where it ends up
        for name in ("xmlpath", "htmlpath"):
            given = getattr(config.option, name, None)
            path = Path(os.path.abspath(given)) if given else None
            if path is not None and self.folder.output in path.parents:
                staged = staging / path.relative_to(self.folder.output)
                setattr(config.option, name, str(staged))
                self.moved[staged] = path

    @pytest.hookimpl(wrapper=True, trylast=True)  # after every writer; before the terminal summary names the files
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: Union[int, pytest.ExitCode]):
        result = yield
        staging = self.folder.staging
        complete = exitstatus not in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR,
                                      pytest.ExitCode.USAGE_ERROR)
        if staging is not None and complete and (staging / "summary.json").is_file():
            try:
                self.folder.commit()
            except OutputFolderError as exc:  # the verdict stands, but its reports are not where asked
                sys.stderr.write(f"vfio-certify: {exc}\n")
                session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
                return result
            for plugin in session.config.pluginmanager.get_plugins():  # pytest-html names its file: the final one
                if getattr(plugin, "_report_path", None) in self.moved:
                    plugin._report_path = self.moved[plugin._report_path]
        return result

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.folder.close()
