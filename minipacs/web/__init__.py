"""DICOMweb, metrics and health over HTTP."""
