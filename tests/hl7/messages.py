"""HL7 v2 test messages written for these tests, in the habits of real interface engines and RIS vendors."""

from __future__ import annotations

from collections.abc import Sequence


def oru(
    control_id: str = "MSG00001",
    *,
    version: str = "2.5.1",
    accession: str = "ACC1001",
    status: str = "F",
    lines: Sequence[str] = ("MRI HEAD WITHOUT CONTRAST", "Findings: no acute infarct.", "Impression: normal study."),
    sending: str = "RIS|HOSPITAL",
    separator: str = "\r",
    ack_modes: tuple[str, str] = ("", ""),
    charset: str = "",
    patient: str = "PID|1||MRN12345^^^HOSP^MR||DOE^JANE^Q||19700101|F",
    extra_segments: Sequence[str] = (),
    message_type: str = "ORU^R01^ORU_R01",
    processing_id: str = "P",
) -> str:
    """An ORU^R01 with one order (OBR-3 = accession) and one TX OBX per line."""
    accept, application = ack_modes
    msh = (
        f"MSH|^~\\&|{sending}|NEUROLABEL|NEURO|20240305143000||{message_type}|{control_id}|{processing_id}|{version}"
        f"|||{accept}|{application}||{charset}"
    ).rstrip("|")
    segments = [
        msh,
        patient,
        "PV1|1|O",
        "ORC|RE|PLC998|" + accession,
        f"OBR|1|PLC998|{accession}|MRHEAD^MRI head without contrast^L|||20240305120000"
        f"|||||||||||||||20240305142500||MR|{status}",
        *(
            f"OBX|{i}|TX|GDT^Report^L||{line}||||||{status if status in 'PFC' else 'F'}"
            for i, line in enumerate(lines, 1)
        ),
        *extra_segments,
    ]
    return separator.join(segments) + separator


def mdm(control_id: str = "MDM00001", *, accession: str = "ACC2001", completion: str = "AU") -> str:
    """An MDM^T02 (original document with content): TXA then OBX, no OBR."""
    return (
        "\r".join(
            [
                f"MSH|^~\\&|DICTATION|HOSPITAL|NEUROLABEL|NEURO|20240306090000||MDM^T02^MDM_T02|{control_id}|P|2.5",
                "EVN|T02|20240306090000",
                "PID|1||MRN777^^^HOSP^MR||ROE^RICHARD||19500505|M",
                "PV1|1|I",
                f"TXA|1|RAD|TX|20240306085500|||||||DOC123||||{accession}||{completion}|||",
                "OBX|1|TX|REPORT^Radiology report||MRI brain: chronic small vessel ischaemic change.||||||F",
                "OBX|2|TX|REPORT^Radiology report||No mass lesion.||||||F",
            ]
        )
        + "\r"
    )


# Messages in vendor habits, each with what the parser must read from it.
VENDOR_CASES: dict[str, tuple[bytes, dict[str, object]]] = {
    "v2.3 cr separators": (
        oru("V23A", version="2.3").encode(),
        {"accession": "ACC1001", "status": "F", "lines": 3, "version": "2.3"},
    ),
    "v2.4 lf separators": (
        oru("V24A", version="2.4", separator="\n").encode(),
        {"accession": "ACC1001", "status": "F", "lines": 3},
    ),
    "v2.5.1 crlf separators": (
        oru("V251A", separator="\r\n").encode(),
        {"accession": "ACC1001", "status": "F", "lines": 3},
    ),
    "repeated PID-3 with assigning authorities": (
        oru("PID3", patient="PID|1||9990001^^^NHS^NH~MRN555^^^STMARYS&1.2.3.4&ISO^MR~X1^^^OLD||SMITH^ANN").encode(),
        {"patient_id": "MRN555", "issuer": "STMARYS", "identifiers": 3},
    ),
    "escape sequences in FT": (
        (
            "MSH|^~\\&|RIS|HOSP|NL|NL|20240305143000||ORU^R01|ESC1|P|2.5\r"
            "PID|1||M1\r"
            "OBR|1||ACC77|MRHEAD|||20240305120000||||||||||||||||||F\r"
            "OBX|1|FT|^Report||Line one\\.br\\Line two: T1\\F\\T2 \\S\\ 5\\T\\6 \\R\\ \\E\\ caf\\XC3A9\\||||||F\r"
        ).encode(),
        {"text": "Line one\nLine two: T1|T2 ^ 5&6 ~ \\ café"},
    ),
    "MSH-18 8859/1 latin-1 bytes": (
        (
            "MSH|^~\\&|RIS|HOSP|NL|NL|20240305143000||ORU^R01|CS1|P|2.4||||||8859/1\r"
            "PID|1||M1||MÜLLER^JOSÉ\r"
            "OBR|1||ACC88|MRHEAD|||||||||||||||||||||F\r"
            "OBX|1|TX|^Report||Läsion im Großhirn, Ödem.||||||F\r"
        ).encode("latin-1"),
        {"text": "Läsion im Großhirn, Ödem.", "codec": "latin-1"},
    ),
    "MSH-18 UNICODE UTF-8": (
        (
            "MSH|^~\\&|RIS|HOSP|NL|NL|20240305143000||ORU^R01|CS2|P|2.5.1||||||UNICODE UTF-8\r"
            "PID|1||M1\r"
            "OBR|1||ACC89|MRHEAD|||||||||||||||||||||F\r"
            "OBX|1|TX|^Report||Lésion « focale » — 5 mm.||||||F\r"
        ).encode("utf-8"),
        {"text": "Lésion « focale » — 5 mm.", "codec": "utf-8"},
    ),
    "ASCII declared, UTF-8 sent": (
        (
            "MSH|^~\\&|RIS|HOSP|NL|NL|20240305143000||ORU^R01|CS3|P|2.5.1\r"
            "OBR|1||ACC90|MRHEAD|||||||||||||||||||||F\r"
            "OBX|1|TX|^Report||Ödem.||||||F\r"
        ).encode("utf-8"),
        {"text": "Ödem.", "warning": True},
    ),
    "Windows-1252 curly quotes": (
        (
            "MSH|^~\\&|RIS|HOSP|NL|NL|20240305143000||ORU^R01|CS4|P|2.5.1\r"
            "OBR|1||ACC91|MRHEAD|||||||||||||||||||||F\r"
            "OBX|1|TX|^Report||\u201cno change\u201d \u2013 stable.||||||F\r"
        ).encode("cp1252"),
        {"text": "\u201cno change\u201d \u2013 stable."},
    ),
    "ZDS study instance uid": (
        oru(
            "ZDS1", extra_segments=["ZDS|1.2.840.113619.2.55.3.604688119.969.1268071029.320^RIS^Application^DICOM"]
        ).encode(),
        {"study_uid": "1.2.840.113619.2.55.3.604688119.969.1268071029.320"},
    ),
    "OBX carrying the DICOM study UID": (
        (
            "MSH|^~\\&|PACS|HOSP|NL|NL|20240305143000||ORU^R01^ORU_R01|UID2|P|2.5.1\r"
            "PID|1||M1\r"
            "OBR|1||ACC92|MRHEAD|||||||||||||||||||||F\r"
            "OBX|1|HD|110180^Study Instance UID^DCM||1.2.826.0.1.3680043.8.498.1||||||F\r"
            "OBX|2|TX|^Report||Normal MRI brain.||||||F\r"
        ).encode(),
        {"study_uid": "1.2.826.0.1.3680043.8.498.1", "text": "Normal MRI brain."},
    ),
    "ST and CE text": (
        (
            "MSH|^~\\&|RIS|HOSP|NL|NL|20240305143000||ORU^R01|CE1|P|2.4\r"
            "OBR|1||ACC93|MRHEAD|||||||||||||||||||||F\r"
            "OBX|1|ST|^Findings||Small meningioma.||||||F\r"
            "OBX|2|CE|^Impression||M-91000^Meningioma^SNM||||||F\r"
            "OBX|3|NM|^Size||12|mm|||||F\r"
        ).encode(),
        {"text": "Small meningioma.\nMeningioma"},
    ),
    "lowercase, trailing whitespace, missing optional fields, extra segments": (
        (
            "msh|^~\\&|ris|hosp|||20240305143000||oru^r01|LOW1|p|2.3  \r\n"
            "pid|1||M1   \r\n"
            "obr|1||acc94|||||||||||||||||||||||f  \r\n"
            "ZXY|custom|vendor|data\r\n"
            "obx|1|tx|||lower case report text   ||||||f\r\n"
            "\r\n"
        ).encode(),
        {"accession": "acc94", "status": "F", "text": "lower case report text"},
    ),
    "raw line feeds inside report text": (
        (
            "MSH|^~\\&|RIS|HOSP|NL|NL|20240305143000||ORU^R01|LF1|P|2.5\r"
            "OBR|1||ACC95|MRHEAD|||||||||||||||||||||F\r"
            "OBX|1|TX|^Report||First line\nsecond line\nthird line||||||F\r"
        ).encode(),
        {"text": "First line\nsecond line\nthird line"},
    ),
    "two orders sharing one report": (
        (
            "MSH|^~\\&|RIS|HOSP|NL|NL|20240305143000||ORU^R01|TWO1|P|2.5\r"
            "PID|1||M1\r"
            "OBR|1||ACC96|MRHEAD|||||||||||||||||||||F\r"
            "OBR|2||ACC97|MRSPINE|||||||||||||||||||||F\r"
            "OBX|1|TX|^Report||Combined head and spine report.||||||F\r"
        ).encode(),
        {"reports": 2, "accession": "ACC96"},
    ),
    "report text in NTE": (
        (
            "MSH|^~\\&|RIS|HOSP|NL|NL|20240305143000||ORU^R01|NTE1|P|2.3\r"
            "OBR|1||ACC98|MRHEAD|||||||||||||||||||||F\r"
            "NTE|1||Old system puts the report here.\r"
            "NTE|2||Second note line.\r"
        ).encode(),
        {"text": "Old system puts the report here.\nSecond note line."},
    ),
    "over-escaped MSH-2": (
        oru("ESC2").replace("MSH|^~\\&|", "MSH|^~\\\\&|", 1).encode(),
        {"accession": "ACC1001"},
    ),
    "preliminary": (oru("PRE1", status="P").encode(), {"status": "P"}),
    "correction": (oru("COR1", status="C").encode(), {"status": "C"}),
    "cancellation": (oru("CAN1", status="X", lines=()).encode(), {"status": "X"}),
    "MDM^T02": (mdm().encode(), {"accession": "ACC2001", "status": "F", "lines": 2}),
    "MDM^T02 preliminary": (mdm("MDM2", completion="DI").encode(), {"status": "P"}),
    "deleted OBX skipped": (
        (
            "MSH|^~\\&|RIS|HOSP|NL|NL|20240305143000||ORU^R01|DEL1|P|2.5\r"
            "OBR|1||ACC99|MRHEAD|||||||||||||||||||||F\r"
            "OBX|1|TX|^Report||Wrong text.||||||D\r"
            "OBX|2|TX|^Report||Right text.||||||F\r"
        ).encode(),
        {"text": "Right text."},
    ),
    "trailing delimiters, MSH-8 security, processing id D, no accession": (
        (
            "MSH|^~\\&|EPIC|EPICADT|SMS|SMSADT|199912271408|CHARRIS|ORU^R01|1817457|D|2.5|\r"
            "PID||0493575^^^2^ID 1|454721||DOE^JOHN^^^^|DOE^JOHN^^^^|19480203|M||B|||||M|NON|400003403~1129086|\r"
            "OBR|1|||71020^CHEST 2 VIEWS^CPT4|||200502221030|||||||||||||||200502221130||XR|F"
            "|||||||&ROBERTS&JOHN&&DR&MD||\r"
            "OBX|1|TX|71020^CHEST 2 VIEWS^CPT4||CLINICAL HISTORY: Cough||||||F|||200502221130|\r"
        ).encode(),
        {"accession": None, "status": "F", "text": "CLINICAL HISTORY: Cough", "patient_id": "454721"},
    ),
    "empty value type, v2.3.1": (
        (
            "MSH|^~\\&|RIS|HOSP|NL|NL|20240305143000||ORU^R01|VT1|P|2.3.1\r"
            "OBR|1||ACC100|MRHEAD|||||||||||||||||||||F\r"
            "OBX|1||||Plain text without a value type.||||||F\r"
        ).encode(),
        {"accession": "ACC100", "text": "Plain text without a value type."},
    ),
    "no VT-style leading whitespace and BOM": (
        ("\ufeff" + oru("BOM1")).encode("utf-8"),
        {"accession": "ACC1001"},
    ),
}

# Messages that must be refused: (bytes, ack code, HL7 error code, ERR location "SEG-field" or None).
ERROR_CASES: dict[str, tuple[bytes, str, str, str | None]] = {
    "not HL7": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "AR", "100", "MSH"),
    "unsupported message type": (oru("E1", message_type="ADT^A01").encode(), "AR", "200", "MSH-9"),
    "unsupported trigger": (oru("E2", message_type="ORU^R30").encode(), "AR", "201", "MSH-9"),
    "unsupported version": (oru("E3", version="3.0").encode(), "AR", "203", "MSH-12"),
    "unsupported processing id": (oru("E4", processing_id="Q").encode(), "AR", "202", "MSH-11"),
    "missing control id": (oru("").encode(), "AR", "101", "MSH-10"),
    "two messages in one frame": ((oru("TWO1") + oru("TWO2")).encode(), "AR", "100", "MSH"),
    "no OBR": (
        "MSH|^~\\&|RIS|HOSP|NL|NL|20240305143000||ORU^R01|E5|P|2.5\rPID|1||M1\r".encode(),
        "AE",
        "100",
        "OBR",
    ),
    "unknown result status": (oru("E6", status="Q").encode(), "AE", "103", "OBR-25"),
    "no report text": (oru("E7", lines=()).encode(), "AE", "101", "OBX-5"),
    "cancellation without accession": (
        "MSH|^~\\&|RIS|HOSP|NL|NL|20240305143000||ORU^R01|E8|P|2.5\rOBR|1|||MRHEAD|||||||||||||||||||||X\r".encode(),
        "AE",
        "101",
        "OBR-3",
    ),
}
