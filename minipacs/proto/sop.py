"""SOP class and transfer syntax UIDs minipacs knows by name (PS3.4, PS3.5, PS3.6 Annex A).

Every UID here was checked against pydicom's UID dictionary or, for the few newer than
pydicom 3.0.2, against PS3.6 Annex A; ``tests/proto/test_sop.py`` re-checks them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from pydicom import uid as _uid
from pydicom.uid import UID
from pydicom.uid import UID_dictionary as _UID_DICTIONARY

# -- Our identity (PS3.7 D.3.3.2): a 2.25 UUID-derived UID, generated once and fixed forever.
IMPLEMENTATION_CLASS_UID: Final = "2.25.308470757098397086683609991720181288213"
IMPLEMENTATION_VERSION_NAME: Final = "MINIPACS_010"  # at most 16 characters

# -- Application context and service SOP classes (PS3.7 A.2.1, PS3.4 A.4, C.6)
APPLICATION_CONTEXT: Final = "1.2.840.10008.3.1.1.1"
VERIFICATION: Final = "1.2.840.10008.1.1"

PATIENT_ROOT_QR_FIND: Final = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_QR_MOVE: Final = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_QR_GET: Final = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_QR_FIND: Final = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_QR_MOVE: Final = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_QR_GET: Final = "1.2.840.10008.5.1.4.1.2.2.3"

QR_FIND_SOP_CLASSES: Final = (PATIENT_ROOT_QR_FIND, STUDY_ROOT_QR_FIND)
QR_MOVE_SOP_CLASSES: Final = (PATIENT_ROOT_QR_MOVE, STUDY_ROOT_QR_MOVE)
QR_GET_SOP_CLASSES: Final = (PATIENT_ROOT_QR_GET, STUDY_ROOT_QR_GET)
QUERY_RETRIEVE_SOP_CLASSES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {"FIND": QR_FIND_SOP_CLASSES, "MOVE": QR_MOVE_SOP_CLASSES, "GET": QR_GET_SOP_CLASSES}
)

# -- Normalized services and the worklist (PS3.4 Annexes J, F, K)
STORAGE_COMMITMENT_PUSH: Final = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_PUSH_INSTANCE: Final = "1.2.840.10008.1.20.1.1"  # well-known (J.3.5)
MPPS: Final = "1.2.840.10008.3.1.2.3.3"  # Modality Performed Procedure Step
MPPS_RETRIEVE: Final = "1.2.840.10008.3.1.2.3.4"  # N-GET of MPPS instances
MODALITY_WORKLIST_FIND: Final = "1.2.840.10008.5.1.4.31"
NORMALIZED_SOP_CLASSES: Final = (STORAGE_COMMITMENT_PUSH, MPPS, MPPS_RETRIEVE,
                                 MODALITY_WORKLIST_FIND)

# -- Native (uncompressed) transfer syntaxes (PS3.5 A.1, A.2, A.5, A.3)
IMPLICIT_VR_LITTLE_ENDIAN: Final = str(_uid.ImplicitVRLittleEndian)
EXPLICIT_VR_LITTLE_ENDIAN: Final = str(_uid.ExplicitVRLittleEndian)
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN: Final = str(_uid.DeflatedExplicitVRLittleEndian)
EXPLICIT_VR_BIG_ENDIAN: Final = str(_uid.ExplicitVRBigEndian)  # retired: accepted, never proposed

# -- Encapsulated transfer syntaxes (PS3.5 A.4, Table A-1 / PS3.6 Annex A)
ENCAPSULATED_UNCOMPRESSED_EXPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2.1.98"
JPEG_BASELINE_8BIT: Final = str(_uid.JPEGBaseline8Bit)  # process 1
JPEG_EXTENDED_12BIT: Final = str(_uid.JPEGExtended12Bit)  # processes 2 & 4
JPEG_LOSSLESS: Final = str(_uid.JPEGLossless)  # process 14
JPEG_LOSSLESS_SV1: Final = str(_uid.JPEGLosslessSV1)  # process 14, selection value 1
# Retired JPEG processes kept because common libjpeg-based toolkits wrote them (Huffman,
# non-hierarchical); the arithmetic-coded and hierarchical ones were never seen in practice.
JPEG_SPECTRAL_SELECTION_6_8: Final = "1.2.840.10008.1.2.4.53"
JPEG_FULL_PROGRESSION_10_12: Final = "1.2.840.10008.1.2.4.55"
JPEG_LS_LOSSLESS: Final = str(_uid.JPEGLSLossless)
JPEG_LS_NEAR_LOSSLESS: Final = str(_uid.JPEGLSNearLossless)
JPEG_2000_LOSSLESS: Final = str(_uid.JPEG2000Lossless)
JPEG_2000: Final = str(_uid.JPEG2000)
JPEG_2000_MC_LOSSLESS: Final = str(_uid.JPEG2000MCLossless)
JPEG_2000_MC: Final = str(_uid.JPEG2000MC)
HTJ2K_LOSSLESS: Final = str(_uid.HTJ2KLossless)
HTJ2K_LOSSLESS_RPCL: Final = str(_uid.HTJ2KLosslessRPCL)
HTJ2K: Final = str(_uid.HTJ2K)
JPEG_XL_LOSSLESS: Final = "1.2.840.10008.1.2.4.110"
JPEG_XL_JPEG_RECOMPRESSION: Final = "1.2.840.10008.1.2.4.111"
JPEG_XL: Final = "1.2.840.10008.1.2.4.112"
RLE_LOSSLESS: Final = str(_uid.RLELossless)
DEFLATED_IMAGE_FRAME_COMPRESSION: Final = "1.2.840.10008.1.2.8.1"
MPEG2_MPML: Final = str(_uid.MPEG2MPML)
MPEG2_MPML_F: Final = str(_uid.MPEG2MPMLF)
MPEG2_MPHL: Final = str(_uid.MPEG2MPHL)
MPEG2_MPHL_F: Final = str(_uid.MPEG2MPHLF)
MPEG4_HP41: Final = str(_uid.MPEG4HP41)
MPEG4_HP41_F: Final = str(_uid.MPEG4HP41F)
MPEG4_HP41_BD: Final = str(_uid.MPEG4HP41BD)
MPEG4_HP41_BD_F: Final = str(_uid.MPEG4HP41BDF)
MPEG4_HP42_2D: Final = str(_uid.MPEG4HP422D)
MPEG4_HP42_2D_F: Final = str(_uid.MPEG4HP422DF)
MPEG4_HP42_3D: Final = str(_uid.MPEG4HP423D)
MPEG4_HP42_3D_F: Final = str(_uid.MPEG4HP423DF)
MPEG4_HP42_STEREO: Final = str(_uid.MPEG4HP42STEREO)
MPEG4_HP42_STEREO_F: Final = str(_uid.MPEG4HP42STEREOF)
HEVC_MP51: Final = str(_uid.HEVCMP51)
HEVC_M10P51: Final = str(_uid.HEVCM10P51)

# Our preference order: Explicit VR LE carries VRs (safe for private tags), Implicit VR LE is
# the default every AE must support (PS3.5 §10.1), Deflated before the retired Big Endian.
UNCOMPRESSED_TRANSFER_SYNTAXES: Final = (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
)
PROPOSABLE_UNCOMPRESSED: Final = tuple(
    ts for ts in UNCOMPRESSED_TRANSFER_SYNTAXES if ts != EXPLICIT_VR_BIG_ENDIAN
)
# Accepted for storage only: minipacs stores the bytes as received and never decodes them.
# JPIP-referenced syntaxes (pixel data held elsewhere) and SMPTE ST 2110 are left out.
ENCAPSULATED_TRANSFER_SYNTAXES: Final = (
    ENCAPSULATED_UNCOMPRESSED_EXPLICIT_VR_LITTLE_ENDIAN,
    JPEG_BASELINE_8BIT,
    JPEG_EXTENDED_12BIT,
    JPEG_LOSSLESS,
    JPEG_LOSSLESS_SV1,
    JPEG_SPECTRAL_SELECTION_6_8,
    JPEG_FULL_PROGRESSION_10_12,
    JPEG_LS_LOSSLESS,
    JPEG_LS_NEAR_LOSSLESS,
    JPEG_2000_LOSSLESS,
    JPEG_2000,
    JPEG_2000_MC_LOSSLESS,
    JPEG_2000_MC,
    HTJ2K_LOSSLESS,
    HTJ2K_LOSSLESS_RPCL,
    HTJ2K,
    JPEG_XL_LOSSLESS,
    JPEG_XL_JPEG_RECOMPRESSION,
    JPEG_XL,
    RLE_LOSSLESS,
    DEFLATED_IMAGE_FRAME_COMPRESSION,
    MPEG2_MPML,
    MPEG2_MPML_F,
    MPEG2_MPHL,
    MPEG2_MPHL_F,
    MPEG4_HP41,
    MPEG4_HP41_F,
    MPEG4_HP41_BD,
    MPEG4_HP41_BD_F,
    MPEG4_HP42_2D,
    MPEG4_HP42_2D_F,
    MPEG4_HP42_3D,
    MPEG4_HP42_3D_F,
    MPEG4_HP42_STEREO,
    MPEG4_HP42_STEREO_F,
    HEVC_MP51,
    HEVC_M10P51,
)
STORAGE_TRANSFER_SYNTAXES: Final = UNCOMPRESSED_TRANSFER_SYNTAXES + ENCAPSULATED_TRANSFER_SYNTAXES
RETIRED_TRANSFER_SYNTAXES: Final = frozenset(
    {EXPLICIT_VR_BIG_ENDIAN, JPEG_SPECTRAL_SELECTION_6_8, JPEG_FULL_PROGRESSION_10_12}
)

# Names of the UIDs above that pydicom 3.0.2 does not know yet (PS3.6 Annex A).
_NEWER_NAMES: Final[Mapping[str, str]] = MappingProxyType(
    {
        JPEG_XL_LOSSLESS: "JPEG XL Lossless",
        JPEG_XL_JPEG_RECOMPRESSION: "JPEG XL JPEG Recompression",
        JPEG_XL: "JPEG XL",
        DEFLATED_IMAGE_FRAME_COMPRESSION: "Deflated Image Frame Compression",
    }
)

# -- Storage SOP classes we accept as SCP (PS3.4 Annex B, Table B.5-1), written out so a
# reviewer can read it. What we leave out, and why, is EXCLUDED_STORAGE_SOP_CLASSES below.
# The four retired *image* classes are kept: old modalities still send them and an archive
# must take old studies.
STORAGE_SOP_CLASSES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image Storage",
        "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
        "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
        "1.2.840.10008.5.1.4.1.1.1.2": "Digital Mammography X-Ray Image Storage - For Presentation",
        "1.2.840.10008.5.1.4.1.1.1.2.1": "Digital Mammography X-Ray Image Storage - For Processing",
        "1.2.840.10008.5.1.4.1.1.1.3": "Digital Intra-Oral X-Ray Image Storage - For Presentation",
        "1.2.840.10008.5.1.4.1.1.1.3.1": "Digital Intra-Oral X-Ray Image Storage - For Processing",
        "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
        "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
        "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
        "1.2.840.10008.5.1.4.1.1.3": "Ultrasound Multi-frame Image Storage (Retired)",
        "1.2.840.10008.5.1.4.1.1.3.1": "Ultrasound Multi-frame Image Storage",
        "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
        "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
        "1.2.840.10008.5.1.4.1.1.4.2": "MR Spectroscopy Storage",
        "1.2.840.10008.5.1.4.1.1.4.3": "Enhanced MR Color Image Storage",
        "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR Image Storage",
        "1.2.840.10008.5.1.4.1.1.5": "Nuclear Medicine Image Storage (Retired)",
        "1.2.840.10008.5.1.4.1.1.6": "Ultrasound Image Storage (Retired)",
        "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound Image Storage",
        "1.2.840.10008.5.1.4.1.1.6.2": "Enhanced US Volume Storage",
        "1.2.840.10008.5.1.4.1.1.6.3": "Photoacoustic Image Storage",
        "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
        "1.2.840.10008.5.1.4.1.1.7.1": "Multi-frame Single Bit Secondary Capture Image Storage",
        "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture Image Storage",
        "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture Image Storage",
        "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture Image Storage",
        "1.2.840.10008.5.1.4.1.1.9.1.1": "12-lead ECG Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.1.2": "General ECG Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.1.3": "Ambulatory ECG Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.1.4": "General 32-bit ECG Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.2.1": "Hemodynamic Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.3.1": "Cardiac Electrophysiology Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.4.1": "Basic Voice Audio Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.4.2": "General Audio Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.5.1": "Arterial Pulse Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.6.1": "Respiratory Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.6.2": "Multi-channel Respiratory Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.7.1": "Routine Scalp Electroencephalogram Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.7.2": "Electromyogram Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.7.3": "Electrooculogram Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.7.4": "Sleep Electroencephalogram Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.8.1": "Body Position Waveform Storage",
        "1.2.840.10008.5.1.4.1.1.9.100.1": "Waveform Presentation State Storage",
        "1.2.840.10008.5.1.4.1.1.9.100.2": "Waveform Acquisition Presentation State Storage",
        "1.2.840.10008.5.1.4.1.1.11.1": "Grayscale Softcopy Presentation State Storage",
        "1.2.840.10008.5.1.4.1.1.11.2": "Color Softcopy Presentation State Storage",
        "1.2.840.10008.5.1.4.1.1.11.3": "Pseudo-Color Softcopy Presentation State Storage",
        "1.2.840.10008.5.1.4.1.1.11.4": "Blending Softcopy Presentation State Storage",
        "1.2.840.10008.5.1.4.1.1.11.5": "XA/XRF Grayscale Softcopy Presentation State Storage",
        "1.2.840.10008.5.1.4.1.1.11.6": (
            "Grayscale Planar MPR Volumetric Presentation State Storage"
        ),
        "1.2.840.10008.5.1.4.1.1.11.7": (
            "Compositing Planar MPR Volumetric Presentation State Storage"
        ),
        "1.2.840.10008.5.1.4.1.1.11.8": "Advanced Blending Presentation State Storage",
        "1.2.840.10008.5.1.4.1.1.11.9": "Volume Rendering Volumetric Presentation State Storage",
        "1.2.840.10008.5.1.4.1.1.11.10": (
            "Segmented Volume Rendering Volumetric Presentation State Storage"
        ),
        "1.2.840.10008.5.1.4.1.1.11.11": (
            "Multiple Volume Rendering Volumetric Presentation State Storage"
        ),
        "1.2.840.10008.5.1.4.1.1.11.12": (
            "Variable Modality LUT Softcopy Presentation State Storage"
        ),
        "1.2.840.10008.5.1.4.1.1.12.1": "X-Ray Angiographic Image Storage",
        "1.2.840.10008.5.1.4.1.1.12.1.1": "Enhanced XA Image Storage",
        "1.2.840.10008.5.1.4.1.1.12.2": "X-Ray Radiofluoroscopic Image Storage",
        "1.2.840.10008.5.1.4.1.1.12.2.1": "Enhanced XRF Image Storage",
        "1.2.840.10008.5.1.4.1.1.12.3": "X-Ray Angiographic Bi-Plane Image Storage (Retired)",
        "1.2.840.10008.5.1.4.1.1.13.1.1": "X-Ray 3D Angiographic Image Storage",
        "1.2.840.10008.5.1.4.1.1.13.1.2": "X-Ray 3D Craniofacial Image Storage",
        "1.2.840.10008.5.1.4.1.1.13.1.3": "Breast Tomosynthesis Image Storage",
        "1.2.840.10008.5.1.4.1.1.13.1.4": (
            "Breast Projection X-Ray Image Storage - For Presentation"
        ),
        "1.2.840.10008.5.1.4.1.1.13.1.5": "Breast Projection X-Ray Image Storage - For Processing",
        "1.2.840.10008.5.1.4.1.1.14.1": (
            "Intravascular Optical Coherence Tomography Image Storage - For Presentation"
        ),
        "1.2.840.10008.5.1.4.1.1.14.2": (
            "Intravascular Optical Coherence Tomography Image Storage - For Processing"
        ),
        "1.2.840.10008.5.1.4.1.1.20": "Nuclear Medicine Image Storage",
        "1.2.840.10008.5.1.4.1.1.30": "Parametric Map Storage",
        "1.2.840.10008.5.1.4.1.1.66": "Raw Data Storage",
        "1.2.840.10008.5.1.4.1.1.66.1": "Spatial Registration Storage",
        "1.2.840.10008.5.1.4.1.1.66.2": "Spatial Fiducials Storage",
        "1.2.840.10008.5.1.4.1.1.66.3": "Deformable Spatial Registration Storage",
        "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
        "1.2.840.10008.5.1.4.1.1.66.5": "Surface Segmentation Storage",
        "1.2.840.10008.5.1.4.1.1.66.6": "Tractography Results Storage",
        "1.2.840.10008.5.1.4.1.1.66.7": "Label Map Segmentation Storage",
        "1.2.840.10008.5.1.4.1.1.66.8": "Height Map Segmentation Storage",
        "1.2.840.10008.5.1.4.1.1.67": "Real World Value Mapping Storage",
        "1.2.840.10008.5.1.4.1.1.68.1": "Surface Scan Mesh Storage",
        "1.2.840.10008.5.1.4.1.1.68.2": "Surface Scan Point Cloud Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.1": "VL Endoscopic Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.1.1": "Video Endoscopic Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.2": "VL Microscopic Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.2.1": "Video Microscopic Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.3": "VL Slide-Coordinates Microscopic Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.4": "VL Photographic Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.4.1": "Video Photographic Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.5.1": "Ophthalmic Photography 8 Bit Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.5.2": "Ophthalmic Photography 16 Bit Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.5.3": "Stereometric Relationship Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.5.4": "Ophthalmic Tomography Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.5.5": (
            "Wide Field Ophthalmic Photography Stereographic Projection Image Storage"
        ),
        "1.2.840.10008.5.1.4.1.1.77.1.5.6": (
            "Wide Field Ophthalmic Photography 3D Coordinates Image Storage"
        ),
        "1.2.840.10008.5.1.4.1.1.77.1.5.7": (
            "Ophthalmic Optical Coherence Tomography En Face Image Storage"
        ),
        "1.2.840.10008.5.1.4.1.1.77.1.5.8": (
            "Ophthalmic Optical Coherence Tomography B-scan Volume Analysis Storage"
        ),
        "1.2.840.10008.5.1.4.1.1.77.1.6": "VL Whole Slide Microscopy Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.7": "Dermoscopic Photography Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.8": "Confocal Microscopy Image Storage",
        "1.2.840.10008.5.1.4.1.1.77.1.9": "Confocal Microscopy Tiled Pyramidal Image Storage",
        "1.2.840.10008.5.1.4.1.1.78.1": "Lensometry Measurements Storage",
        "1.2.840.10008.5.1.4.1.1.78.2": "Autorefraction Measurements Storage",
        "1.2.840.10008.5.1.4.1.1.78.3": "Keratometry Measurements Storage",
        "1.2.840.10008.5.1.4.1.1.78.4": "Subjective Refraction Measurements Storage",
        "1.2.840.10008.5.1.4.1.1.78.5": "Visual Acuity Measurements Storage",
        "1.2.840.10008.5.1.4.1.1.78.6": "Spectacle Prescription Report Storage",
        "1.2.840.10008.5.1.4.1.1.78.7": "Ophthalmic Axial Measurements Storage",
        "1.2.840.10008.5.1.4.1.1.78.8": "Intraocular Lens Calculations Storage",
        "1.2.840.10008.5.1.4.1.1.79.1": "Macular Grid Thickness and Volume Report Storage",
        "1.2.840.10008.5.1.4.1.1.80.1": (
            "Ophthalmic Visual Field Static Perimetry Measurements Storage"
        ),
        "1.2.840.10008.5.1.4.1.1.81.1": "Ophthalmic Thickness Map Storage",
        "1.2.840.10008.5.1.4.1.1.82.1": "Corneal Topography Map Storage",
        "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.35": "Extensible SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.40": "Procedure Log Storage",
        "1.2.840.10008.5.1.4.1.1.88.50": "Mammography CAD SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.59": "Key Object Selection Document Storage",
        "1.2.840.10008.5.1.4.1.1.88.65": "Chest CAD SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.67": "X-Ray Radiation Dose SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.68": "Radiopharmaceutical Radiation Dose SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.69": "Colon CAD SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.70": "Implantation Plan SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.71": "Acquisition Context SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.72": "Simplified Adult Echo SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.73": "Patient Radiation Dose SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.74": "Planned Imaging Agent Administration SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.75": "Performed Imaging Agent Administration SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.76": "Enhanced X-Ray Radiation Dose SR Storage",
        "1.2.840.10008.5.1.4.1.1.88.77": "Waveform Annotation SR Storage",
        "1.2.840.10008.5.1.4.1.1.90.1": "Content Assessment Results Storage",
        "1.2.840.10008.5.1.4.1.1.91.1": "Microscopy Bulk Simple Annotations Storage",
        "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF Storage",
        "1.2.840.10008.5.1.4.1.1.104.2": "Encapsulated CDA Storage",
        "1.2.840.10008.5.1.4.1.1.104.3": "Encapsulated STL Storage",
        "1.2.840.10008.5.1.4.1.1.104.4": "Encapsulated OBJ Storage",
        "1.2.840.10008.5.1.4.1.1.104.5": "Encapsulated MTL Storage",
        "1.2.840.10008.5.1.4.1.1.128": "Positron Emission Tomography Image Storage",
        "1.2.840.10008.5.1.4.1.1.128.1": "Legacy Converted Enhanced PET Image Storage",
        "1.2.840.10008.5.1.4.1.1.130": "Enhanced PET Image Storage",
        "1.2.840.10008.5.1.4.1.1.131": "Basic Structured Display Storage",
        "1.2.840.10008.5.1.4.1.1.200.2": "CT Performed Procedure Protocol Storage",
        "1.2.840.10008.5.1.4.1.1.200.8": "XA Performed Procedure Protocol Storage",
        "1.2.840.10008.5.1.4.1.1.481.1": "RT Image Storage",
        "1.2.840.10008.5.1.4.1.1.481.2": "RT Dose Storage",
        "1.2.840.10008.5.1.4.1.1.481.3": "RT Structure Set Storage",
        "1.2.840.10008.5.1.4.1.1.481.4": "RT Beams Treatment Record Storage",
        "1.2.840.10008.5.1.4.1.1.481.5": "RT Plan Storage",
        "1.2.840.10008.5.1.4.1.1.481.6": "RT Brachy Treatment Record Storage",
        "1.2.840.10008.5.1.4.1.1.481.7": "RT Treatment Summary Record Storage",
        "1.2.840.10008.5.1.4.1.1.481.8": "RT Ion Plan Storage",
        "1.2.840.10008.5.1.4.1.1.481.9": "RT Ion Beams Treatment Record Storage",
        "1.2.840.10008.5.1.4.1.1.481.10": "RT Physician Intent Storage",
        "1.2.840.10008.5.1.4.1.1.481.11": "RT Segment Annotation Storage",
        "1.2.840.10008.5.1.4.1.1.481.12": "RT Radiation Set Storage",
        "1.2.840.10008.5.1.4.1.1.481.13": "C-Arm Photon-Electron Radiation Storage",
        "1.2.840.10008.5.1.4.1.1.481.14": "Tomotherapeutic Radiation Storage",
        "1.2.840.10008.5.1.4.1.1.481.15": "Robotic-Arm Radiation Storage",
        "1.2.840.10008.5.1.4.1.1.481.16": "RT Radiation Record Set Storage",
        "1.2.840.10008.5.1.4.1.1.481.17": "RT Radiation Salvage Record Storage",
        "1.2.840.10008.5.1.4.1.1.481.18": "Tomotherapeutic Radiation Record Storage",
        "1.2.840.10008.5.1.4.1.1.481.19": "C-Arm Photon-Electron Radiation Record Storage",
        "1.2.840.10008.5.1.4.1.1.481.20": "Robotic Radiation Record Storage",
        "1.2.840.10008.5.1.4.1.1.481.21": "RT Radiation Set Delivery Instruction Storage",
        "1.2.840.10008.5.1.4.1.1.481.22": "RT Treatment Preparation Storage",
        "1.2.840.10008.5.1.4.1.1.481.23": "Enhanced RT Image Storage",
        "1.2.840.10008.5.1.4.1.1.481.24": "Enhanced Continuous RT Image Storage",
        "1.2.840.10008.5.1.4.1.1.481.25": "RT Patient Position Acquisition Instruction Storage",
        "1.2.840.10008.5.1.4.34.7": "RT Beams Delivery Instruction Storage",
        "1.2.840.10008.5.1.4.34.10": "RT Brachy Application Setup Delivery Instruction Storage",
    }
)
RETIRED_STORAGE_SOP_CLASSES: Final = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.3",  # Ultrasound Multi-frame Image Storage (Retired)
        "1.2.840.10008.5.1.4.1.1.5",  # Nuclear Medicine Image Storage (Retired)
        "1.2.840.10008.5.1.4.1.1.6",  # Ultrasound Image Storage (Retired)
        "1.2.840.10008.5.1.4.1.1.12.3",  # X-Ray Angiographic Bi-Plane Image Storage (Retired)
    }
)

_NON_PATIENT = "Non-Patient Object Storage (PS3.4 Annex GG): no Patient IE to index"
_NOT_MEDICAL = "not a medical object (DICOS / DICONDE): no patient"
_NOT_COMPOSITE = "not a composite instance storage SOP class"
_RETIRED_PRINT = "retired print / stored print class"
_RETIRED_STANDALONE = "retired standalone object from before the 1990s"
_TRIAL = "retired trial class, superseded by the final SOP class"

# Storage-named SOP classes deliberately not accepted; tests check the curation is total.
EXCLUDED_STORAGE_SOP_CLASSES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "1.2.840.10008.1.3.10": _NOT_COMPOSITE,  # Media Storage Directory Storage
        "1.2.840.10008.1.20.1": _NOT_COMPOSITE,  # Storage Commitment Push Model
        "1.2.840.10008.1.20.2": _NOT_COMPOSITE,  # Storage Commitment Pull Model (Retired)
        "1.2.840.10008.5.1.1.27": _RETIRED_PRINT,  # Stored Print Storage
        "1.2.840.10008.5.1.1.29": _RETIRED_PRINT,  # Hardcopy Grayscale Image Storage
        "1.2.840.10008.5.1.1.30": _RETIRED_PRINT,  # Hardcopy Color Image Storage
        "1.2.840.10008.5.1.4.38.1": _NON_PATIENT,  # Hanging Protocol Storage
        "1.2.840.10008.5.1.4.39.1": _NON_PATIENT,  # Color Palette Storage
        "1.2.840.10008.5.1.4.43.1": _NON_PATIENT,  # Generic Implant Template Storage
        "1.2.840.10008.5.1.4.44.1": _NON_PATIENT,  # Implant Assembly Template Storage
        "1.2.840.10008.5.1.4.45.1": _NON_PATIENT,  # Implant Template Group Storage
        "1.2.840.10008.5.1.4.1.1.200.1": _NON_PATIENT,  # CT Defined Procedure Protocol
        "1.2.840.10008.5.1.4.1.1.200.3": _NON_PATIENT,  # Protocol Approval Storage
        "1.2.840.10008.5.1.4.1.1.200.7": _NON_PATIENT,  # XA Defined Procedure Protocol
        "1.2.840.10008.5.1.4.1.1.201.1": _NON_PATIENT,  # Inventory Storage
        "1.2.840.10008.5.1.4.1.1.501.1": _NOT_MEDICAL,  # DICOS CT Image Storage
        "1.2.840.10008.5.1.4.1.1.501.2.1": _NOT_MEDICAL,  # DICOS Digital X-Ray, Presentation
        "1.2.840.10008.5.1.4.1.1.501.2.2": _NOT_MEDICAL,  # DICOS Digital X-Ray, Processing
        "1.2.840.10008.5.1.4.1.1.501.3": _NOT_MEDICAL,  # DICOS Threat Detection Report
        "1.2.840.10008.5.1.4.1.1.501.4": _NOT_MEDICAL,  # DICOS 2D AIT Storage
        "1.2.840.10008.5.1.4.1.1.501.5": _NOT_MEDICAL,  # DICOS 3D AIT Storage
        "1.2.840.10008.5.1.4.1.1.501.6": _NOT_MEDICAL,  # DICOS Quadrupole Resonance
        "1.2.840.10008.5.1.4.1.1.601.1": _NOT_MEDICAL,  # Eddy Current Image Storage
        "1.2.840.10008.5.1.4.1.1.601.2": _NOT_MEDICAL,  # Eddy Current Multi-frame Image
        "1.2.840.10008.5.1.4.1.1.8": _RETIRED_STANDALONE,  # Standalone Overlay Storage
        "1.2.840.10008.5.1.4.1.1.9": _RETIRED_STANDALONE,  # Standalone Curve Storage
        "1.2.840.10008.5.1.4.1.1.10": _RETIRED_STANDALONE,  # Standalone Modality LUT Storage
        "1.2.840.10008.5.1.4.1.1.11": _RETIRED_STANDALONE,  # Standalone VOI LUT Storage
        "1.2.840.10008.5.1.4.1.1.129": _RETIRED_STANDALONE,  # Standalone PET Curve Storage
        "1.2.840.10008.5.1.4.1.1.9.1": _TRIAL,  # Waveform Storage - Trial
        "1.2.840.10008.5.1.4.1.1.77.1": _TRIAL,  # VL Image Storage - Trial
        "1.2.840.10008.5.1.4.1.1.77.2": _TRIAL,  # VL Multi-frame Image Storage - Trial
        "1.2.840.10008.5.1.4.1.1.88.1": _TRIAL,  # Text SR Storage - Trial
        "1.2.840.10008.5.1.4.1.1.88.2": _TRIAL,  # Audio SR Storage - Trial
        "1.2.840.10008.5.1.4.1.1.88.3": _TRIAL,  # Detail SR Storage - Trial
        "1.2.840.10008.5.1.4.1.1.88.4": _TRIAL,  # Comprehensive SR Storage - Trial
        "1.2.840.10008.5.1.4.34.1": _TRIAL,  # RT Beams Delivery Instruction Storage - Trial
    }
)

_OWN_NAMES: Final[Mapping[str, str]] = MappingProxyType({**STORAGE_SOP_CLASSES, **_NEWER_NAMES})


def name_of(uid: str) -> str:
    """Human name of a UID for log lines (PS3.6 Annex A); the UID itself when unknown."""
    uid = uid.rstrip("\0 ")  # UIDs on the wire may carry one trailing NUL pad (PS3.5 §9.1)
    name = _OWN_NAMES.get(uid)
    if name is not None:
        return name
    entry = _UID_DICTIONARY.get(uid)
    if entry is None:
        return uid
    return f"{entry[0]} (Retired)" if entry[3] == "Retired" else entry[0]


def dataset_encoding(transfer_syntax: str) -> tuple[bool, bool, bool]:
    """(implicit VR, little endian, deflated) of a data set in a transfer syntax (PS3.5 §10).

    Covers the syntaxes pydicom 3.0.2 does not know yet (all Explicit VR Little Endian,
    encapsulated); raises ValueError for a UID that is not a known transfer syntax.
    """
    if transfer_syntax in _NEWER_NAMES:
        return False, True, False
    ts = UID(transfer_syntax)
    if not ts.is_transfer_syntax:
        raise ValueError(f"not a known transfer syntax: {transfer_syntax}")
    return ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated
