"""ctpipe: CLI and settings. Everything else lives in schemas/, producers/, processors/, sinks/."""

__version__ = "0.1.0"
