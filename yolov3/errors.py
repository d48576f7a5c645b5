"""The exceptions that describe a user's mistake, gathered for the command lines.

train.py, val.py and detect.py catch :func:`user_errors` and print the message as one line (exit status 2), no
traceback: each class names the file, key or flag and what was expected. This module sits above every module that
defines one, so none of them needs to know the others.
"""
from __future__ import annotations


def user_errors() -> tuple:
    """Exception classes that describe a user's mistake (bad file, key or value): printed as one line, no traceback.

    Collected from the modules that define them, so a command line can catch them all in one place. Imported when
    called (an ``except`` clause calls it only once an exception has arrived): detect.py would otherwise load the
    checkpoint, dataset, download and VOC-conversion modules at every start-up for their exception classes alone.
    """
    from yolov3.cfgparse import CfgError
    from yolov3.checkpoint import RunFolderError
    from yolov3.config import ConfigError
    from yolov3.data_yaml import DataError
    from yolov3.files import OutputError
    from yolov3.weights import WeightsError

    return (FileNotFoundError, OutputError, ConfigError, CfgError, WeightsError, DataError, RunFolderError)
