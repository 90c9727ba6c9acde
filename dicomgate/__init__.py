"""dicomgate: a DICOM gateway that receives studies, de-identifies them and delivers them to S3."""

from dicomgate.config import Settings, SettingsError, load_settings

__all__ = ["Settings", "SettingsError", "__version__", "load_settings"]

__version__ = "0.1.0"
