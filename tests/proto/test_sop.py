"""UID tables in minipacs.proto.sop, checked against pydicom's dictionary and PS3.6."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydicom import uid as pyuid
from pydicom.uid import UID, UID_dictionary

from minipacs.proto import sop

# UIDs newer than pydicom 3.0.2's dictionary (PS3.6 Annex A, 2024-2025). Note that importing
# pynetdicom adds the transfer syntaxes to pydicom's dictionary, so tests must not rely on
# their absence.
NEWER_STORAGE = {
    "1.2.840.10008.5.1.4.1.1.9.100.1": "Waveform Presentation State Storage",
    "1.2.840.10008.5.1.4.1.1.9.100.2": "Waveform Acquisition Presentation State Storage",
    "1.2.840.10008.5.1.4.1.1.66.7": "Label Map Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.66.8": "Height Map Segmentation Storage",
}
NEWER_TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2.4.110": "JPEG XL Lossless",
    "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
    "1.2.840.10008.1.2.8.1": "Deflated Image Frame Compression",
}
RETIRED_SUFFIX = " (Retired)"


def _pydicom_storage_classes() -> dict[str, tuple[str, ...]]:
    return {
        uid: entry
        for uid, entry in UID_dictionary.items()
        if entry[1] == "SOP Class" and "Storage" in entry[0]
    }


class TestStorageTable:
    def test_every_entry_matches_pydicom_or_is_a_known_newer_class(self) -> None:
        for uid, name in sop.STORAGE_SOP_CLASSES.items():
            if uid in NEWER_STORAGE:
                assert name == NEWER_STORAGE[uid]
                continue
            entry = UID_dictionary[uid]
            assert entry[1] == "SOP Class", uid
            retired = entry[3] == "Retired"
            assert retired == (uid in sop.RETIRED_STORAGE_SOP_CLASSES), uid
            expected = entry[0] + (RETIRED_SUFFIX if retired else "")
            assert name == expected, uid

    def test_newer_classes_are_known_to_pynetdicom(self) -> None:
        sop_class = pytest.importorskip("pynetdicom.sop_class")
        pynetdicom_uids = set(sop_class._STORAGE_CLASSES.values())
        assert set(NEWER_STORAGE) <= pynetdicom_uids
        assert set(NEWER_STORAGE) <= set(sop.STORAGE_SOP_CLASSES)

    def test_every_name_is_a_storage_class_name(self) -> None:
        for name in sop.STORAGE_SOP_CLASSES.values():
            base = name.removesuffix(RETIRED_SUFFIX)
            assert re.search(r"Storage( - For (Presentation|Processing))?$", base), name

    def test_curation_is_total(self) -> None:
        # Every storage-named class pydicom knows is either accepted or excluded with a
        # reason, so a pydicom upgrade that adds classes fails here until someone decides.
        known = set(sop.STORAGE_SOP_CLASSES) | set(sop.EXCLUDED_STORAGE_SOP_CLASSES)
        missing = set(_pydicom_storage_classes()) - known
        assert not missing, sorted(missing)

    def test_no_excluded_class_slipped_in(self) -> None:
        assert not set(sop.STORAGE_SOP_CLASSES) & set(sop.EXCLUDED_STORAGE_SOP_CLASSES)
        for uid in sop.EXCLUDED_STORAGE_SOP_CLASSES:
            assert uid in UID_dictionary, uid
        by_name = {entry[0]: uid for uid, entry in UID_dictionary.items()}
        for name in (
            "Media Storage Directory Storage",
            "Storage Commitment Push Model SOP Class",
            "Stored Print Storage SOP Class",
            "Hanging Protocol Storage",
            "Color Palette Storage",
            "Generic Implant Template Storage",
            "Implant Assembly Template Storage",
            "Implant Template Group Storage",
            "CT Defined Procedure Protocol Storage",
            "XA Defined Procedure Protocol Storage",
            "Protocol Approval Storage",
            "Inventory Storage",
        ):
            assert by_name[name] not in sop.STORAGE_SOP_CLASSES, name
            assert by_name[name] in sop.EXCLUDED_STORAGE_SOP_CLASSES, name

    def test_patient_related_protocol_records_are_kept(self) -> None:
        # Performed procedure protocols describe a patient's procedure (PS3.4 B.5-1).
        assert pyuid.CTPerformedProcedureProtocolStorage in sop.STORAGE_SOP_CLASSES
        assert pyuid.XAPerformedProcedureProtocolStorage in sop.STORAGE_SOP_CLASSES

    @pytest.mark.parametrize(
        "uid",
        [
            pyuid.CTImageStorage,
            pyuid.MRImageStorage,
            pyuid.UltrasoundImageStorage,
            pyuid.UltrasoundMultiFrameImageStorage,
            pyuid.ComputedRadiographyImageStorage,
            pyuid.DigitalXRayImageStorageForPresentation,
            pyuid.DigitalXRayImageStorageForProcessing,
            pyuid.DigitalMammographyXRayImageStorageForPresentation,
            pyuid.SecondaryCaptureImageStorage,
            pyuid.EnhancedCTImageStorage,
            pyuid.EnhancedMRImageStorage,
            pyuid.BasicTextSRStorage,
            pyuid.EncapsulatedPDFStorage,
            pyuid.EncapsulatedCDAStorage,
            pyuid.EncapsulatedSTLStorage,
            pyuid.GrayscaleSoftcopyPresentationStateStorage,
            pyuid.RTPlanStorage,
            pyuid.RTStructureSetStorage,
            pyuid.RTDoseStorage,
            pyuid.SegmentationStorage,
            pyuid.TwelveLeadECGWaveformStorage,
            pyuid.KeyObjectSelectionDocumentStorage,
            pyuid.SpatialRegistrationStorage,
            pyuid.RawDataStorage,
            pyuid.ParametricMapStorage,
            pyuid.TractographyResultsStorage,
            pyuid.PositronEmissionTomographyImageStorage,
            pyuid.NuclearMedicineImageStorage,
        ],
    )
    def test_well_known_classes_present(self, uid: str) -> None:
        assert uid in sop.STORAGE_SOP_CLASSES

    def test_retired_image_classes_accepted_and_marked(self) -> None:
        assert {
            "1.2.840.10008.5.1.4.1.1.3",
            "1.2.840.10008.5.1.4.1.1.5",
            "1.2.840.10008.5.1.4.1.1.6",
            "1.2.840.10008.5.1.4.1.1.12.3",
        } == set(sop.RETIRED_STORAGE_SOP_CLASSES)
        for uid in sop.RETIRED_STORAGE_SOP_CLASSES:
            assert sop.STORAGE_SOP_CLASSES[uid].endswith(RETIRED_SUFFIX)

    def test_all_storage_uids_are_valid_dicom_uids(self) -> None:
        for uid in sop.STORAGE_SOP_CLASSES:
            assert UID(uid).is_valid, uid
            assert uid.startswith("1.2.840.10008.5.1.4."), uid


class TestServiceClasses:
    def test_verification_and_application_context(self) -> None:
        assert UID_dictionary[sop.VERIFICATION][0] == "Verification SOP Class"
        assert UID_dictionary[sop.APPLICATION_CONTEXT][0] == "DICOM Application Context Name"

    def test_query_retrieve_groups(self) -> None:
        expected = {
            "FIND": ("Patient Root", "Study Root"),
            "MOVE": ("Patient Root", "Study Root"),
            "GET": ("Patient Root", "Study Root"),
        }
        assert set(sop.QUERY_RETRIEVE_SOP_CLASSES) == set(expected)
        for op, roots in expected.items():
            uids = sop.QUERY_RETRIEVE_SOP_CLASSES[op]
            names = [UID_dictionary[uid][0] for uid in uids]
            assert names == [f"{root} Query/Retrieve Information Model - {op}" for root in roots]


class TestTransferSyntaxes:
    def test_uncompressed_order(self) -> None:
        assert (
            pyuid.ExplicitVRLittleEndian,
            pyuid.ImplicitVRLittleEndian,
            pyuid.DeflatedExplicitVRLittleEndian,
            pyuid.ExplicitVRBigEndian,
        ) == sop.UNCOMPRESSED_TRANSFER_SYNTAXES

    def test_proposable_excludes_big_endian_only(self) -> None:
        assert sop.UNCOMPRESSED_TRANSFER_SYNTAXES[:3] == sop.PROPOSABLE_UNCOMPRESSED
        assert sop.EXPLICIT_VR_BIG_ENDIAN not in sop.PROPOSABLE_UNCOMPRESSED

    def test_storage_is_union_without_duplicates(self) -> None:
        union = sop.UNCOMPRESSED_TRANSFER_SYNTAXES + sop.ENCAPSULATED_TRANSFER_SYNTAXES
        assert union == sop.STORAGE_TRANSFER_SYNTAXES
        assert len(set(union)) == len(union)

    def test_every_syntax_is_a_transfer_syntax_by_name(self) -> None:
        for ts in sop.STORAGE_TRANSFER_SYNTAXES:
            if ts in NEWER_TRANSFER_SYNTAXES:
                # importing pynetdicom adds these to pydicom's dictionary; names must agree
                name = NEWER_TRANSFER_SYNTAXES[ts]
                assert UID_dictionary.get(ts, (name,))[0] == name
                assert sop.name_of(ts) == name
                continue
            assert UID_dictionary[ts][1] == "Transfer Syntax", ts

    def test_encapsulated_ones_are_encapsulated(self) -> None:
        for ts in sop.ENCAPSULATED_TRANSFER_SYNTAXES:
            if ts not in NEWER_TRANSFER_SYNTAXES:
                assert UID(ts).is_encapsulated, ts
        for ts in sop.UNCOMPRESSED_TRANSFER_SYNTAXES:
            assert not UID(ts).is_encapsulated, ts

    def test_families_requested_are_all_present(self) -> None:
        wanted = [
            pyuid.JPEGBaseline8Bit,
            pyuid.JPEGExtended12Bit,
            pyuid.JPEGLossless,
            pyuid.JPEGLosslessSV1,
            pyuid.JPEGLSLossless,
            pyuid.JPEGLSNearLossless,
            pyuid.JPEG2000Lossless,
            pyuid.JPEG2000,
            pyuid.JPEG2000MCLossless,
            pyuid.JPEG2000MC,
            pyuid.HTJ2KLossless,
            pyuid.HTJ2KLosslessRPCL,
            pyuid.HTJ2K,
            pyuid.RLELossless,
            *pyuid.MPEGTransferSyntaxes,
            *NEWER_TRANSFER_SYNTAXES,
        ]
        for ts in wanted:
            assert ts in sop.ENCAPSULATED_TRANSFER_SYNTAXES, ts

    def test_jpip_and_smpte_2110_are_not_accepted(self) -> None:
        for uid, entry in UID_dictionary.items():
            if entry[1] == "Transfer Syntax" and ("JPIP" in entry[0] or "SMPTE" in entry[0]):
                assert uid not in sop.STORAGE_TRANSFER_SYNTAXES, entry[0]

    def test_retired_syntaxes_are_marked(self) -> None:
        for ts in sop.STORAGE_TRANSFER_SYNTAXES:
            retired = ts in UID_dictionary and UID_dictionary[ts][3] == "Retired"
            assert retired == (ts in sop.RETIRED_TRANSFER_SYNTAXES), ts

    def test_named_constants_agree_with_pydicom(self) -> None:
        pairs = {
            sop.IMPLICIT_VR_LITTLE_ENDIAN: pyuid.ImplicitVRLittleEndian,
            sop.EXPLICIT_VR_LITTLE_ENDIAN: pyuid.ExplicitVRLittleEndian,
            sop.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN: pyuid.DeflatedExplicitVRLittleEndian,
            sop.EXPLICIT_VR_BIG_ENDIAN: pyuid.ExplicitVRBigEndian,
            sop.JPEG_SPECTRAL_SELECTION_6_8: "1.2.840.10008.1.2.4.53",
            sop.ENCAPSULATED_UNCOMPRESSED_EXPLICIT_VR_LITTLE_ENDIAN: "1.2.840.10008.1.2.1.98",
        }
        for ours, theirs in pairs.items():
            assert ours == theirs
            assert type(ours) is str  # plain strings, not pydicom UID objects

    def test_dataset_encoding(self) -> None:
        assert sop.dataset_encoding(sop.IMPLICIT_VR_LITTLE_ENDIAN) == (True, True, False)
        assert sop.dataset_encoding(sop.EXPLICIT_VR_LITTLE_ENDIAN) == (False, True, False)
        assert sop.dataset_encoding(sop.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN) == (False, True, True)
        assert sop.dataset_encoding(sop.EXPLICIT_VR_BIG_ENDIAN) == (False, False, False)
        assert sop.dataset_encoding(sop.JPEG_XL) == (False, True, False)
        for ts in sop.STORAGE_TRANSFER_SYNTAXES:
            sop.dataset_encoding(ts)  # never raises for a syntax we accept
        with pytest.raises(ValueError):
            sop.dataset_encoding(sop.VERIFICATION)


class TestNamesAndIdentity:
    def test_name_of(self) -> None:
        assert sop.name_of(pyuid.CTImageStorage) == "CT Image Storage"
        assert sop.name_of(sop.VERIFICATION) == "Verification SOP Class"
        assert sop.name_of(sop.EXPLICIT_VR_BIG_ENDIAN) == "Explicit VR Big Endian (Retired)"
        assert sop.name_of("1.2.840.10008.5.1.4.1.1.6") == "Ultrasound Image Storage (Retired)"
        assert sop.name_of("1.2.840.10008.5.1.4.1.1.66.7") == "Label Map Segmentation Storage"
        # Not in our tables but in pydicom's dictionary:
        assert sop.name_of("1.2.840.10008.5.1.4.38.1") == "Hanging Protocol Storage"
        assert sop.name_of("1.2.3.4") == "1.2.3.4"
        assert sop.name_of("1.2.840.10008.1.1\0") == "Verification SOP Class"

    def test_implementation_identity(self) -> None:
        assert sop.IMPLEMENTATION_CLASS_UID.startswith("2.25.")
        assert UID(sop.IMPLEMENTATION_CLASS_UID).is_valid
        assert len(sop.IMPLEMENTATION_CLASS_UID) <= 64
        # PS3.7 D.3.3.2.3: 1 to 16 characters of the default repertoire.
        assert re.fullmatch(r"[\x20-\x7e]{1,16}", sop.IMPLEMENTATION_VERSION_NAME)


class TestConformanceStatement:
    """docs/conformance.md must list exactly what sop.py accepts and refuses."""

    DOC = Path(__file__).resolve().parents[2] / "docs" / "conformance.md"

    def _rows(self, section: str) -> list[list[str]]:
        text = self.DOC.read_text(encoding="utf-8")
        match = re.search(rf"<!-- {section}: begin.*?-->(.*?)<!-- {section}: end -->", text, re.S)
        assert match, section
        rows = [line.strip().strip("|").split("|") for line in match.group(1).splitlines()]
        cells = [[cell.strip() for cell in row] for row in rows if len(row) > 1]
        return cells[2:]  # skip the header and the --- line

    def test_storage_table(self) -> None:
        rows = self._rows("storage-sop-classes")
        documented = {row[1].strip("`"): (row[0], row[2] == "yes") for row in rows}
        assert len(documented) == len(rows)
        expected = {
            uid: (name.removesuffix(RETIRED_SUFFIX), uid in sop.RETIRED_STORAGE_SOP_CLASSES)
            for uid, name in sop.STORAGE_SOP_CLASSES.items()
        }
        assert documented == expected

    def test_transfer_syntax_table(self) -> None:
        rows = self._rows("transfer-syntaxes")
        assert [row[1].strip("`") for row in rows] == list(sop.STORAGE_TRANSFER_SYNTAXES)
        for name, uid, kind, retired in rows:
            ts = uid.strip("`")
            assert name == sop.name_of(ts).removesuffix(RETIRED_SUFFIX)
            native = ts in sop.UNCOMPRESSED_TRANSFER_SYNTAXES
            assert kind == ("native" if native else "encapsulated")
            assert (retired == "yes") == (ts in sop.RETIRED_TRANSFER_SYNTAXES)

    def test_excluded_table(self) -> None:
        rows = self._rows("excluded-sop-classes")
        documented = {row[1].strip("`"): row[2] for row in rows}
        assert documented == dict(sop.EXCLUDED_STORAGE_SOP_CLASSES)

    def test_identity_and_counts_in_prose(self) -> None:
        text = self.DOC.read_text(encoding="utf-8")
        assert sop.IMPLEMENTATION_CLASS_UID in text
        assert sop.IMPLEMENTATION_VERSION_NAME in text
        assert f"({len(sop.STORAGE_SOP_CLASSES)} classes)" in text
