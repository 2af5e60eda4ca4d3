"""Rule-based detection and masking of PHI in Chinese and English clinical text.

Pure Python (no Django) so it can run from a plain CLI and be tested without a database.
`detect_phi` finds spans; `Deidentifier` replaces them with typed placeholders such as [NAME_1],
consistently across all the fields of one case; `pseudonym` gives keyed, stable identifiers for
linking the cases of one patient without storing the identifier itself.

Detection is a set of independent rules that propose candidate spans with a priority; overlaps are
resolved greedily (higher priority, then longer span). Names found once are then masked wherever
else they occur. jieba is used only for Chinese names in running text, loaded lazily on first use.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import functools
import hashlib
import hmac
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

KINDS = ("NAME", "ID", "PHONE", "EMAIL", "MRN", "ADDRESS", "DATE", "AGE")


@dataclass(frozen=True)
class PhiSpan:
    start: int
    end: int
    kind: str
    text: str


# ---------------------------------------------------------------------------------------------
# Shared building blocks
# ---------------------------------------------------------------------------------------------

HAN = "\u4e00-\u9fff\u3400-\u4dbf"
_HAN_CHAR = re.compile(f"[{HAN}]")
_LATIN_WORD = re.compile(r"[A-Za-z]{2}")
_PLACEHOLDER = re.compile(r"\[(?:" + "|".join(KINDS) + r")_\d+\]")
_SEP = r"[ \t]*(?:\#[ \t]*)?[:：#]?[ \t]*"  # between a label and its value: "MRN: ", "MRN#: ", "MRN #"

# A candidate span before overlap resolution: (start, end, kind, priority).
_Candidate = tuple[int, int, str, int]
_PRIO_EMAIL, _PRIO_LABELLED, _PRIO_PATTERN, _PRIO_ADDRESS, _PRIO_DATE, _PRIO_NAME, _PRIO_ECHO = 90, 80, 70, 60, 50, 40, 30


def _is_han(char: str) -> bool:
    return bool(_HAN_CHAR.match(char))


def _spaced(alternation: str) -> str:
    """'姓名|住院号' -> '姓[ \\t]?名|住[ \\t]?院[ \\t]?号': forms are often typed as '姓 名：'."""
    return "|".join(r"[ \t]?".join(word) for word in alternation.split("|"))


def _valid_date(year: int, month: int, day: int) -> bool:
    try:
        _dt.date(year, month, day)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Resident identity numbers
# ---------------------------------------------------------------------------------------------

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_ID18 = re.compile(r"\d{17}[\dX]")
_ID15 = re.compile(r"\d{15}")


def _plausible_birth(year: int, month: int, day: int) -> bool:
    return _valid_date(year, month, day) and _dt.date(1900, 1, 1) <= _dt.date(year, month, day) <= _dt.date.today()


def valid_resident_id(number: str) -> bool:
    """18-digit PRC resident ID: ISO 7064 MOD 11-2 check character and a plausible birth date."""
    number = re.sub(r"[\s-]", "", str(number)).upper()
    if not _ID18.fullmatch(number) or number[0] not in "12345678":
        return False
    total = sum(int(digit) * weight for digit, weight in zip(number[:17], _ID_WEIGHTS, strict=True))
    if _ID_CHECK[total % 11] != number[17]:
        return False
    return _plausible_birth(int(number[6:10]), int(number[10:12]), int(number[12:14]))


def _plausible_old_id(number: str) -> bool:
    """15-digit first-generation ID: region code + YYMMDD (19xx) + sequence; it has no check digit."""
    if not _ID15.fullmatch(number) or number[0] not in "12345678":
        return False
    return _plausible_birth(1900 + int(number[6:8]), int(number[8:10]), int(number[10:12]))


# ---------------------------------------------------------------------------------------------
# Normalisation: what makes two spellings the same identifier
# ---------------------------------------------------------------------------------------------

_NON_DIGIT = re.compile(r"\D")
_YMD = re.compile(r"((?:19|20)\d{2})\s*[-/.年]\s*(\d{1,2})\s*(?:[-/.月]\s*(\d{1,2})\s*[日号]?|月)?")


def _normalise_phone(value: str) -> str:
    """Digits only, without the country code: +86 138 1234 5678 and 138-1234-5678 are one number."""
    digits = _NON_DIGIT.sub("", value)
    if value.lstrip().startswith("00"):
        digits = digits[2:]
    if digits.startswith("86") and len(digits) >= 11:
        local = digits[2:]
        is_mobile = local.startswith("1") and len(local) == 11
        return local if is_mobile or local.startswith("0") else "0" + local  # restore a landline's trunk 0
    if len(digits) == 11 and re.match(r"\s*(?:\+1|1[\s.-])", value):
        return digits[1:]  # North American, +1
    return digits


def _normalise_date(value: str) -> str:
    match = _YMD.fullmatch(value.strip())
    if match:
        year, month, day = match.group(1), int(match.group(2)), match.group(3)
        return f"{year}-{month:02d}" + (f"-{int(day):02d}" if day else "")
    return re.sub(r"\s+", " ", value.strip().casefold())


def _normalise_name(value: str) -> str:
    if _HAN_CHAR.search(value):
        return re.sub(r"\s+", "", value)
    return " ".join(value.replace(".", " ").split()).casefold()


def normalise(kind: str, value: str) -> str:
    """The canonical form of `value` for `kind`: two values with one form are one identifier."""
    value = value.strip()
    if kind == "PHONE":
        return _normalise_phone(value)
    if kind in ("ID", "MRN"):
        return re.sub(r"[\s\-/.]", "", value).upper()
    if kind == "EMAIL":
        return value.casefold()
    if kind == "AGE":
        return _NON_DIGIT.sub("", value) or value
    if kind == "DATE":
        return _normalise_date(value)
    if kind == "NAME":
        return _normalise_name(value)
    return re.sub(r"\s+", "", value).casefold()


# ---------------------------------------------------------------------------------------------
# Labelled values: the label tells the kind; the value is masked and the label kept
# ---------------------------------------------------------------------------------------------

_ID_LABELS = _spaced("公民身份号码|身份证件号码|身份证号码|身份证号|身份证|证件号码|证件号|护照号码|护照号") + (
    r"|(?i:(?:national|resident|citizen)\s+id(?:\s+card)?(?:\s+(?:no\.?|number|\#))?"
    r"|id\s*card(?:\s*(?:no\.?|number|\#))?|id\s*(?:no\.?|number|\#)|passport(?:\s+(?:no\.?|number|\#))?"
    r"|ssn|social\s+security(?:\s+(?:no\.?|number|\#))?)"
)
_MRN_LABELS = (
    _spaced(
        "病历号|病案号|住院号|门诊号|急诊号|档案号|登记号|就诊号|流水号|卡号|医保号|社保号|患者编号|病人编号|住院编号|门诊编号"
        "|保险单号|保单号|保险号|合同号|理赔号|参保号"
    )
    + rf"|ID\s*号|(?<=[{HAN}])ID"
    r"|(?i:mrn|mr\s*\#|pid|medical\s+record(?:\s+(?:number|no\.?|num|\#))?"
    r"|(?:record|hospital|hosp|account|acct|encounter|visit|chart|case|clinic|admission|adm|inpatient|outpatient"
    r"|registration|member|policy|subscriber|beneficiary|insurance(?:\s+member)?|ins|medicare|medicaid|patient|pt)"
    r"\.?\s*(?:id|identifier|no\.?|number|num|\#)|mbi|(?:medicare\s+)?beneficiary\s+identifier)"
    # In a message: "her mrn is W0012345".
    r"(?:[ \t]+(?i:is|was))?"
)
_PHONE_LABELS = (
    _spaced("紧急联系电话|联系电话|联系方式|电话号码|手机号码|手机号|家庭电话|办公电话|电话|手机|座机|固话|传真|微信")
    + r"|(?i:telephone|tel|phone(?:\s+(?:no\.?|number))?|mobile|cell(?:\s*phone)?|fax|contact\s+(?:number|no\.?))"
)
_LABEL_VALUE = r"[A-Za-z0-9](?:[A-Za-z0-9\-/]|[ \t](?=\d{3})|\.(?=\d))*"

_LABELLED_ID = re.compile(rf"(?:{_ID_LABELS})[ \t]*(?:为|是)?{_SEP}(?P<v>{_LABEL_VALUE})")
_LABELLED_MRN = re.compile(rf"(?:{_MRN_LABELS})[ \t]*(?:为|是)?{_SEP}(?P<v>{_LABEL_VALUE})")
_LABELLED_PHONE = re.compile(
    rf"(?:{_PHONE_LABELS})[ \t]*(?:为|是|号)?{_SEP}"
    r"(?P<v>(?:\+|00)?[(（]?\d[\d \t\-()（）.]{5,}\d(?:[ \t]*(?i:ext|x|转)\.?[ \t]*\d{1,5})?)"
)


def _labelled(pattern: re.Pattern[str], kind: str, text: str, min_digits: int) -> list[_Candidate]:
    found = []
    for match in pattern.finditer(text):
        start = match.start("v")
        value = match.group("v").rstrip(" -/.")
        if sum(char.isdigit() for char in value) >= min_digits:
            found.append((start, start + len(value), kind, _PRIO_LABELLED))
    return found


# ---------------------------------------------------------------------------------------------
# Pattern identifiers: e-mail, IDs, phones
# ---------------------------------------------------------------------------------------------

_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_ID_ANYWHERE = re.compile(r"(?<![0-9A-Za-z])(?:\d{17}[\dXx]|\d{15})(?![0-9A-Za-z])")
_PHONE_PATTERNS = (
    # Chinese mobiles, optionally +86, grouped 3-4-4 by spaces or hyphens.
    re.compile(r"(?<![\d+])(?:(?:\+|00)86[ \t-]?)?1[3-9]\d(?:[ \t-]?\d{4}){2}(?!\d)"),
    # Chinese landlines with an area code, written with a separator or in parentheses.
    re.compile(r"(?<![\d+])(?:\(0\d{2,3}\)[ \t]?|（0\d{2,3}）|0\d{2,3}[ \t-])\d{3,4}[ \t-]?\d{4}(?!\d)"),
    re.compile(r"(?<![\d+])(?:\+|00)86[ \t-]?\(?0?\d{2,3}\)?[ \t-]\d{3,4}[ \t-]?\d{4}(?!\d)"),
    # North-American numbers.
    re.compile(r"(?<![\d+])(?:\+?1[ \t.-]?)?(?:\([2-9]\d{2}\)[ \t]?|[2-9]\d{2}[ \t.-])\d{3}[ \t.-]\d{4}(?!\d)"),
    # A North-American number typed without separators (2025550123, 12025550123). A stray record number
    # of that shape is masked too: a missed phone costs more than a masked record number.
    re.compile(r"(?<![\w+./-])(?:1[2-9]|[2-9])\d{9}(?![\w/-]|\.\d)"),
)


def _pattern_identifiers(text: str) -> list[_Candidate]:
    found = [(m.start(), m.end(), "EMAIL", _PRIO_EMAIL) for m in _EMAIL.finditer(text)]
    for match in _ID_ANYWHERE.finditer(text):
        number = match.group().upper()
        if valid_resident_id(number) or _plausible_old_id(number):
            found.append((match.start(), match.end(), "ID", _PRIO_LABELLED))
    for pattern in _PHONE_PATTERNS:
        found += [(m.start(), m.end(), "PHONE", _PRIO_PATTERN) for m in pattern.finditer(text)]
    return found


# ---------------------------------------------------------------------------------------------
# Dates
# ---------------------------------------------------------------------------------------------

_MONTH = (
    r"(?:(?:January|February|March|April|May|June|July|August|September|October|November|December)(?![a-z])"
    r"|(?:Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?|Oct|Nov|Dec)(?![a-z])\.?)"
)
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?(?![\d:])"
_YEAR = r"(?:1[89]|20)\d{2}(?!\d)"
_DD = r"(?:[12]\d|3[01]|0?[1-9])"
_MM = r"(?:1[0-2]|0?[1-9])"
_ZH_NUM = "〇零一二三四五六七八九十"

_WEEKDAY = r"(?:Mon|Tues?|Wed(?:nes)?|Thu(?:rs?)?|Fri|Sat(?:ur)?|Sun)(?:day)?\.?"
_DATE_CONTEXT = (
    r"\b(?:on|since|from|until|till|by|before|after|dated|appointment|appt|seen|visit|follow-?up|f/u|scheduled|admitted"
    r"|discharged|due|cultures?|labs|surgery|procedure|biopsy|scan|CT|MRI|echo|TTE|TEE|CXR|EKG|ECG|"
    rf"{_WEEKDAY})"
)
_DATE_PATTERNS = (
    re.compile(rf"(?<!\d)(?:19|20)\d{{2}}[ \t]*年[ \t]*{_MM}[ \t]*月(?:[ \t]*{_DD}[ \t]*[日号])?"),  # 2023年5月12日
    re.compile(rf"(?<![\d年.]){_MM}[ \t]*月[ \t]*{_DD}[ \t]*[日号]"),  # 5月12日
    re.compile(rf"[{_ZH_NUM}]{{4}}年[{_ZH_NUM}]{{1,2}}月(?:[{_ZH_NUM}]{{1,3}}[日号])?"),
    re.compile(rf"(?<![\d./-])(?:19|20)\d{{2}}([-/.]){_MM}\1{_DD}(?!\d)"),  # 2023-05-12, 2023/5/12, 2023.05.12
    re.compile(rf"(?<![\d./-]){_DD}([-/.]){_DD}\1(?:19|20)\d{{2}}(?!\d)"),  # 05/12/2023, 12.05.2023
    re.compile(rf"(?<![\d./-]){_DD}/{_DD}/\d{{2}}(?![\d/-])"),  # 5/12/23 (10-10-10 is an insulin schedule)
    re.compile(r"(?<![\d./-])(?:19|20)\d{2}[-/](?:0[1-9]|1[0-2])(?![\d/-])"),  # 2023-05
    re.compile(rf"(?<![\d./-]){_MM}/(?:19|20)\d{{2}}(?![\d/])"),  # 05/2023
    # A month/day without a year only in a date context: "on 3/22", "Tuesday 4/23", "cultures 8/19",
    # "(8/25 around 05:00)"; a bare 3/22 may be a ratio, a score (MMSE 16/30) or a strength (4/5).
    re.compile(rf"{_DATE_CONTEXT}[ \t]+(?:the[ \t]+)?(?P<v>{_MM}/{_DD})(?![\d/])(?![ \t]*(?i:mg|ml|mcg|strength|power))"),
    re.compile(rf"(?<![\d./-])(?P<v>{_MM}/{_DD})(?=[ \t]+(?:at|around|@|~)?[ \t]*\d{{1,2}}(?::\d{{2}}|[ \t]?[ap]m))"),
    re.compile(rf"(?i:{_DATE_CONTEXT})[ \t]+(?:the[ \t]+)?(?P<v>(?i:{_MONTH})[ \t]+{_DAY})"),  # "on sept 28"
    re.compile(rf"\b{_MONTH}[ \t]+{_DAY}(?:,?[ \t]+{_YEAR})?"),  # May 12, 2023 / March 3rd / Jan. 5
    re.compile(rf"\b{_MONTH},?[ \t]+{_YEAR}"),  # May 2023
    re.compile(rf"(?<![\d.]){_DAY}[ \t]+(?:of[ \t]+)?{_MONTH}(?:,?[ \t]+{_YEAR})?"),  # 12 May 2023
    re.compile(rf"(?<![\d.]){_DD}-{_MONTH}-(?:\d{{4}}|\d{{2}})(?!\d)"),  # 12-May-2023
)
_DATE_LABELS = _spaced(
    "出生日期|出生年月|生日|入院日期|入院时间|出院日期|出院时间|手术日期|手术时间|就诊日期|就诊时间|记录日期"
    "|记录时间|发病日期|死亡日期|检查日期|报告日期|日期"
) + (
    r"|(?i:d\.?o\.?b\.?|date\s+of\s+(?:birth|admission|discharge|death|service|surgery|visit)"
    r"|birth\s*date|birthday|admission\s+date|discharge\s+date|visit\s+date|admitted(?:\s+on)?"
    r"|discharged(?:\s+on)?|date)"
)
# Loose forms accepted only after a date label: 20230512, 2023 05 12.
_LABELLED_DATE = re.compile(
    rf"(?:{_DATE_LABELS}){_SEP}(?:on[ \t]+)?"
    r"(?P<v>(?:19|20)\d{2}(?:[ \t]?\d{2}[ \t]?\d{2}|[ \t]\d{1,2}[ \t]\d{1,2})(?!\d))"
)


def _dates(text: str) -> list[_Candidate]:
    found = []
    for pattern in _DATE_PATTERNS:
        group = "v" if "v" in pattern.groupindex else 0
        found += [(*m.span(group), "DATE", _PRIO_DATE) for m in pattern.finditer(text)]
    for match in _LABELLED_DATE.finditer(text):
        digits = _NON_DIGIT.sub("", match.group("v"))
        if len(digits) == 8 and _valid_date(int(digits[:4]), int(digits[4:6]), int(digits[6:])):
            found.append((match.start("v"), match.end("v"), "DATE", _PRIO_LABELLED))
    return found


# ---------------------------------------------------------------------------------------------
# Ages over 89 (younger ages are not identifying)
# ---------------------------------------------------------------------------------------------

_OLD = r"(?:9\d|1[01]\d)"  # 90-119
_AGE_PATTERNS = (
    re.compile(rf"(?<![\d.]){_OLD}[ \t]*(?:周岁|岁)"),
    re.compile(
        r"(?:九十[一二三四五六七八九]?|一百(?:零[一二三四五六七八九]|一十[一二三四五六七八九]?|[一二三四五六七八九十])?)(?:周岁|岁)"
    ),
    re.compile(rf"(?<![\d.]){_OLD}(?:[ \t]*|-)(?:years?|yrs?|y)(?:[ \t]*|-)old\b", re.IGNORECASE),
    re.compile(rf"(?<![\d.]){_OLD}[ \t]*-?[ \t]*(?:yo|y/o|y\.o\.|yrs?|years?)(?![a-z])", re.IGNORECASE),
)
_LABELLED_AGE = re.compile(
    rf"(?:年[ \t]?龄|(?i:\bage[ds]?))[ \t]*[:：]?[ \t]*(?P<v>{_OLD}(?:[ \t]*(?i:years?|yrs?|y))?)(?!\d|\.\d|[A-Za-z])"
)


# Bare ages in context: "91M" in a case header (but not a 99F temperature), "he is 92 now", "(she's 99)",
# and "Mr. Doe, 101, MRN ..." where the number sits between a name and more demographics.
_CONTEXT_AGES = (
    re.compile(rf"(?:^|(?<=[,;(—–-]|\s))(?<!\d[ \t])(?P<v>{_OLD})[ \t]?[MF](?![\w°.])", re.MULTILINE),
    re.compile(
        rf"\b(?i:(?:he|she|patient|pt|mom|dad|mother|father)(?:['’]?s|[ \t]+is|[ \t]+was|[ \t]+turned|[ \t]+turns)"
        rf"|aged?|turned|turns)[ \t]+(?P<v>{_OLD})(?![\d.%/])(?![ \t]*(?i:%|percent|kg|lbs?|mg|bpm|degrees|mmhg|°))"
    ),
    re.compile(rf"(?<=[A-Za-z.)]),[ \t]*(?P<v>{_OLD})(?=[ \t]*,[ \t]*(?:MRN|DOB|born|male|female|man|woman|[MF]\b))"),
)
_TEMPERATURE_CUE = re.compile(r"(?i:temp|fever|febrile|tmax|\bt\b)[^\n]{0,12}$")


def _ages(text: str) -> list[_Candidate]:
    found = []
    for pattern in _AGE_PATTERNS:
        found += [(m.start(), m.end(), "AGE", _PRIO_LABELLED) for m in pattern.finditer(text)]
    found += [(m.start("v"), m.end("v"), "AGE", _PRIO_DATE) for m in _LABELLED_AGE.finditer(text)]
    for pattern in _CONTEXT_AGES:
        for match in pattern.finditer(text):
            if not _TEMPERATURE_CUE.search(text, max(0, match.start() - 20), match.start()):
                found.append((match.start("v"), match.end("v"), "AGE", _PRIO_DATE))
    return found


# ---------------------------------------------------------------------------------------------
# Chinese addresses: a run of administrative and street segments
# ---------------------------------------------------------------------------------------------

_PROVINCES = (
    "北京|天津|上海|重庆|河北|山西|辽宁|吉林|黑龙江|江苏|浙江|安徽|福建|江西|山东|河南|湖北|湖南|广东|海南"
    "|四川|贵州|云南|陕西|甘肃|青海|台湾|内蒙古|广西|西藏|宁夏|新疆|香港|澳门"
)
# Han characters that never sit inside a place name but often follow one in a sentence.
_ADDR_HAN = rf"(?:(?![因于的了是在及患病痛症伴])[{HAN}])"
_ADDR_TOKEN = rf"(?:{_ADDR_HAN}|\d|[A-Za-z])"
_ZH_NUMERAL = "一二三四五六七八九十"
# Segment kinds: a province or city, a district or county, a named place finer than that (town, road,
# village, estate), a building or room number, and what only continues an address already started.
_SEG_CITY, _SEG_DISTRICT, _SEG_PLACE, _SEG_NUMBER, _SEG_TAIL = range(5)
_ADDR_SEGMENTS = (
    (re.compile(rf"(?:{_PROVINCES})(?:维吾尔自治区|壮族自治区|回族自治区|自治区|特别行政区|省|市)?"), _SEG_CITY),
    (re.compile(rf"{_ADDR_HAN}{{1,6}}?(?:自治州|地区|盟|市)"), _SEG_CITY),
    (re.compile(rf"{_ADDR_HAN}{{1,6}}?(?:自治县|新区|开发区|区|县|旗)"), _SEG_DISTRICT),
    (re.compile(rf"{_ADDR_HAN}{{1,6}}?(?:街道|镇|乡)"), _SEG_PLACE),
    (re.compile(rf"{_ADDR_TOKEN}{{1,8}}?(?:大道|大街|路|街|巷|胡同)+(?:[{_ZH_NUMERAL}\d]+段)?"), _SEG_PLACE),
    (re.compile(rf"{_ADDR_TOKEN}{{1,8}}?(?:社区|小区|花园|新村|家园|公寓|大厦|广场|村|苑|庄|屯|里)+"), _SEG_PLACE),
    (
        re.compile(
            rf"附?(?:\d+|[A-Za-z]|[{_ZH_NUMERAL}]+|[东南西北中])(?:-\d+)*"
            r"(?:号楼|号院|号|栋|幢|座|单元|层|楼|室|房|户|弄|组|队|排|门)"
        ),
        _SEG_NUMBER,
    ),
    (re.compile(r"\d+(?:-\d+){1,3}(?![\d-])|\d{3,4}(?!\d)"), _SEG_TAIL),  # 2-3-1, or a bare room number
    # An estate named without a suffix, known by the building number after it: 恒大名都5栋.
    (re.compile(rf"{_ADDR_TOKEN}{{2,8}}?(?=[A-Za-z\d]{{1,3}}(?:号楼|栋|幢|座|号院))"), _SEG_TAIL),
)
_GENERIC_PLACES = set(
    "农村 乡村 山村 城区 市区 郊区 城市 本市 本地 当地 外地 老家 家乡 社区 小区 街道 城乡 乡镇 该村 本村".split()
)
_ADDR_LABEL_WORDS = _spaced(
    "家庭住址|现住址|户籍地址|居住地址|联系地址|通讯地址|家庭地址|工作地址|单位地址|邮寄地址|收件地址|暂住地址"
    "|现居住地|住址|地址|住所|居所|宿舍"
)
_ADDR_LABEL = re.compile(rf"(?:{_ADDR_LABEL_WORDS})[ \t]*(?:为|是)?[:：]?[ \t]*")
_ADDR_LEAD = re.compile(
    rf"(?:{_ADDR_LABEL_WORDS}|籍贯|户籍|现住|家住|住在|住于|居住于|居住在|居住|暂住|来自|现居|出生于|出生地|位于|住)"
    r"[ \t]*(?:为|是)?[:：]?[ \t]*"
)
_ADDR_START = re.compile(rf"(?={_PROVINCES})|(?<![{HAN}])(?=[{HAN}])")
_ADDR_STOP = re.compile(r"[，,。；;！!？?\s（）()]|电话|手机|联系|邮编|邮箱|Tel|Phone")
# An address-looking run that names an institution is a hospital or a school, not where someone lives.
_INSTITUTION_AFTER = re.compile(
    rf"[{HAN}]{{0,8}}?(?:医院|卫生院|卫生服务|卫生室|诊所|门诊部|保健院|中心|大学|学院|学校|中学|小学|公司|研究所|研究院|疾控)"
)


def _address_at(text: str, pos: int) -> tuple[int, bool]:
    """Greedy run of address segments from `pos`: (end, whether the run makes an address).

    A city alone (河北省石家庄市) or a ward and a floor (病区2楼) is not an address; a district within
    a city, or a named place (town, road, village, estate) located by anything else, is.
    """
    end, kinds = pos, []
    while True:
        for pattern, kind in _ADDR_SEGMENTS:
            gap = 1 if kinds and text.startswith((" ", "\t"), end) else 0  # 北京市 朝阳区
            match = pattern.match(text, end + gap)
            if not match or (kind == _SEG_TAIL and _SEG_PLACE not in kinds and _SEG_NUMBER not in kinds):
                continue
            if match.group().lstrip("0123456789") in _GENERIC_PLACES:
                continue
            end = match.end()
            kinds.append(kind)
            break
        else:
            district_in_city = _SEG_DISTRICT in kinds and _SEG_CITY in kinds
            return end, len(kinds) >= 2 and (_SEG_PLACE in kinds or district_in_city)


def _chinese_addresses(text: str) -> list[_Candidate]:
    found = []
    starts = {m.end() for m in _ADDR_LEAD.finditer(text)}
    starts |= {m.start() for m in _ADDR_START.finditer(text) if not _ADDR_LEAD.match(text, m.start())}
    covered = -1
    for start in sorted(starts):
        if start < covered:
            continue  # inside an address already found: a shorter reading of the same run
        end, is_address = _address_at(text, start)
        if is_address and end - start >= 4 and not _INSTITUTION_AFTER.match(text, end):
            found.append((start, end, "ADDRESS", _PRIO_ADDRESS))
            covered = end
    for match in _ADDR_LABEL.finditer(text):
        start = match.end()
        stop = _ADDR_STOP.search(text, start)
        end = stop.start() if stop else len(text)
        end = max(end, _address_at(text, start)[0])
        if end - start >= 2 and not text[start:end].isascii():
            found.append((start, end, "ADDRESS", _PRIO_LABELLED))
    return found


# ---------------------------------------------------------------------------------------------
# English addresses
# ---------------------------------------------------------------------------------------------

_STREET_TYPES = (
    r"Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter|Circle|Cir"
    r"|Parkway|Pkwy|Highway|Hwy|Square|Sq|Trail|Trl|Route|Rte|Alley|Crescent|Cres|Close|Grove|Gardens|Row|Walk"
)
_REGIONS = (  # US states, DC, PR and Canadian provinces
    "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND"
    "|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|PR|AB|BC|MB|NB|NL|NS|NT|NU|ON|PE|QC|SK|YT"
)
_POSTCODE = r"\d{5}(?:-\d{4})?|[A-Z]\d[A-Z][ ]?\d[A-Z]\d|[A-Z]{1,2}\d[A-Z\d]?[ ]\d[A-Z]{2}"
_EN_CITY_WORD = r"[A-Z][a-zà-ÿ]*[A-Z]?[a-zà-ÿ]+(?:-[A-Z][a-zà-ÿ]+)?"
_EN_CITY = rf"{_EN_CITY_WORD}(?:[ \t]{_EN_CITY_WORD}){{0,2}}"
_UNIT = r"(?:(?i:apt|apartment|suite|ste|unit|room|rm|flat|floor|fl|bldg|building)\.?[ \t]*#?[ \t]*|#[ \t]*)[A-Za-z0-9-]+"
_EN_CITY_TAIL = rf"(?:,[ \t]*{_EN_CITY}(?:,?[ \t]*(?:{_REGIONS})\b(?:[ \t]+(?:{_POSTCODE}))?|[ \t]+(?:{_POSTCODE}))?)?"
_STREET = re.compile(
    rf"(?<![\w.])(?:{_UNIT},?[ \t]+)?\d{{1,6}}[A-Za-z]?(?:-\d+)?[ \t]+"
    rf"(?:(?:[NSEW]\.?|North|South|East|West)[ \t]+)?(?:(?:[A-Z][a-z]+|\d+(?:st|nd|rd|th))\.?[ \t]+){{1,4}}"
    rf"(?:{_STREET_TYPES})\b\.?(?:[ \t]+(?:NE|NW|SE|SW|N|S|E|W)\b)?(?:,?[ \t]*{_UNIT})?{_EN_CITY_TAIL}"
    rf"|(?<![\w.])(?i:P\.?[ \t]?O\.?[ \t]+Box)[ \t]+\d+{_EN_CITY_TAIL}"
    # Rural delivery: "Rural Route 4, Box 12, Town, ST 12345", "RR 2 Box 7", "HC 64 Box 3".
    # "RR" alone is a respiratory rate, so the short forms need the box.
    rf"|(?<![\w.])(?:(?:Rural|Star)[ \t]+Route[ \t]+\d+(?:,?[ \t]+(?i:box)[ \t]+\d+)?"
    rf"|(?:R\.?R\.?|HC)[ \t]+\d+,?[ \t]+(?i:box)[ \t]+\d+){_EN_CITY_TAIL}"
)
_EN_CITY_REGION_POSTCODE = re.compile(rf"\b{_EN_CITY},?[ \t]+(?:{_REGIONS})[ \t]+(?:{_POSTCODE})(?![\w])")
# After a colon anything goes ("Address: 4820 rue Saint-Denis"); without one ("discharged home 2 days
# later") the value must look like a street: a number, then a capitalised word or a unit.
_EN_ADDR_LABEL = re.compile(
    r"\b(?i:(?:[a-z]{1,20}\s+)?address(?:\s+on\s+[a-z]+)?|addr\.?|home|hotel|residence|(?:lives|living|resides|residing)"
    r"(?:\s+alone)?\s+at)[ \t]*(?:[:：][ \t]*(?=\d|(?i:apt|apartment|suite|unit|room|flat)\b)"
    r"|(?=\d{1,6}[A-Za-z]?[ \t]+(?:[NSEW]\.?[ \t]+)?[A-Z0-9]|(?i:apt|apartment|suite|unit|room|flat)[ \t]*#?\d))"
)
_EN_ADDR_STOP = re.compile(r"\n|;|\.[ \t]+[A-Z]|\.$|[ \t]{2,}|\b(?i:tel|phone|cell|email|dob|mrn)\b")


def _english_addresses(text: str) -> list[_Candidate]:
    found = [(m.start(), m.end(), "ADDRESS", _PRIO_ADDRESS) for m in _STREET.finditer(text)]
    found += [(m.start(), m.end(), "ADDRESS", _PRIO_ADDRESS) for m in _EN_CITY_REGION_POSTCODE.finditer(text)]
    for match in _EN_ADDR_LABEL.finditer(text):
        start = match.end()
        stop = _EN_ADDR_STOP.search(text, start)
        end = start + len(text[start : stop.start() if stop else len(text)].rstrip(" ,."))
        if end > start:
            found.append((start, end, "ADDRESS", _PRIO_LABELLED))
    return found


# ---------------------------------------------------------------------------------------------
# Chinese names: surname + one or two given characters, bounded by context
# ---------------------------------------------------------------------------------------------

_COMPOUND_SURNAMES = (
    "欧阳|司马|诸葛|上官|东方|皇甫|慕容|令狐|尉迟|公孙|长孙|宇文|司徒|夏侯|轩辕|西门|南宫|独孤|端木|百里|呼延"
    "|澹台|公冶|太史|申屠|钟离|闾丘|万俟|司空|濮阳|淳于|单于|赫连|拓跋|东郭|左丘|梁丘|第五"
)
_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
    "姚卢姜崔钟谭陆汪范金石廖贾夏韦付傅方白邹孟熊秦邱江尹薛闫阎段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔"
    "向汤常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝包宁尚符舒阮柯纪梅童凌毕"
    "单季裴霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕屈饶解牟艾尤阳时穆农司卓古吉缪简车项连芦麦褚"
    "娄窦戚岑景党宫费卜冷晏席卫米柏宗瞿桂全佟应臧闵苟邬边卞姬师仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池查"
    "麻苑迟邝官封谈匡鞠惠荆乐冀郁胥南班储原栗燕楚鄢劳谌奚皮粟冼蔺楼盘满闻位厉伊仝区郜海阚花权强帅屠豆朴盖"
    "练廉禹井祖漆巴丰支卿国狄平计索宣晋相初门云容敬扈晁芮都普阙浦戈伏鹿薄邸雍辜羊乌母裘亓修邰赫杭况那宿鲜"
    "印逯隆茹诸战慕危玉银亢嵇哈湛宾戎勾茅利於居揭干尉冶斯元束檀衣信展阴昝智幸奉植衡富尧贝"
)
# Compound surnames that are never ordinary words (东方 is "east", 长孙 an eldest grandson): a rare two-character
# surname with a plausible given name is a name wherever it stands, without a cue on its left.
_WORD_LIKE_COMPOUNDS = set("东方 西门 长孙 公孙 司空 第五 百里 太史 单于 南宫 司马 左丘".split())
_RARE_COMPOUND_SURNAMES = set(_COMPOUND_SURNAMES.split("|")) - _WORD_LIKE_COMPOUNDS
_ZH_SURNAME_AT = re.compile(rf"(?=(?P<s>{_COMPOUND_SURNAMES}|[{_SURNAMES}]))")
# Characters that end a name rather than continue it: function words, titles, clinical characters.
_NOT_GIVEN = set(
    "的了是在因于与及或等诉述称说无不未已被把从到对患病者院医护男女岁年日时分秒次个例某痛热咳血压糖脂炎症癌"
    "瘤肿药片针术侧部型期性号床室科区市省县路街村镇乡楼层门诊查验检疗服用予给行伴后前今昨入出去回住就复主任"
    "教授先师姐哥弟妹爷奶叔姨舅妈爸儿孙之其他她它们这那每各该本左右上下内外间约几两百千零〇老送氏班话看"
)
_ZH_NAME_LABELS = _spaced("患者姓名|病人姓名|患儿姓名|家属姓名|联系人姓名|姓名|名字")
# Labels that take a person after a colon: the people of a ward round, an operation or a consent form.
_ZH_ROLE_LABELS = (
    _spaced(
        "医师签名|医生签名|护士签名|患者签名|家属签名|签名|签字|记录者|记录人|审核人|报告人|术者|主刀|一助|二助|三助|助手"
        "|麻醉|器械护士|巡回护士|洗手护士|陈述者|病史陈述者|病史提供者|供史者|代诉人|照护者|主要照护者|监护人|委托人"
        "|代理人|陪护人|陪同人|签字人|联系人|紧急联系人|家属|主持人|参会人员|参加人员|出席人员|发送人|留言人|咨询人|申请人"
        "|被保险人|投保人|见证人|谈话人|经办人|交班人|接班人|讨论病例"
    )
    + rf"|[{HAN}]{{0,4}}(?:医师|医生|护士|护师|技师|药师)"
)
_ZH_PATIENT_WORDS = "患者|病人|患儿|病儿|孕妇|产妇|伤者|伤员"
_ZH_RELATION_WORDS = (
    "其子|其女|其父|其母|其妻|其夫|其兄|其弟|其姐|其妹|其孙|其孙女|其儿子|其女儿|其丈夫|其妻子|其爱人|其配偶|其儿媳"
    "|其女婿|其外孙|其外孙女|儿子|女儿|长子|次子|长女|次女|丈夫|妻子|老伴|爱人|配偶|父亲|母亲|哥哥|姐姐|弟弟|妹妹"
    "|孙子|孙女|外孙|外孙女|外甥|外甥女|侄子|侄女|儿媳|女婿|公公|婆婆|岳父|岳母|祖父|祖母|外公|外婆|爷爷|奶奶"
    "|叔叔|阿姨|舅舅|姑姑|表哥|表姐|表弟|表妹|堂兄|堂弟|亲属|家属|朋友|同事|同学|室友|邻居|保姆|护工|男友|女友"
    "|未婚夫|未婚妻|监护人|联系人|医生|医师|护士|护师|护士长|大夫|主任|科主任|院长|教授|老师|律师"
    "|爸爸|妈妈|老公|老婆|姥姥|姥爷|嫂子|姐夫|妹夫|弟媳|儿媳妇|孙媳|重孙|曾孙|外孙子|药师|技师|治疗师"
)
_ZH_LEFT = re.compile(
    rf"(?:(?P<name_label>{_ZH_NAME_LABELS})|(?P<role_label>{_ZH_ROLE_LABELS})|(?P<patient>{_ZH_PATIENT_WORDS})"
    rf"|(?P<relation>{_ZH_RELATION_WORDS}))[ \t]*(?P<colon>[:：])?[ \t]*(?P<then>{_ZH_RELATION_WORDS})?[ \t]*$"
    r"|(?P<weak>由|与|和|及|经|请|让|叫|给|被|同|跟|见|陪|为|是|据|将|把|对|、)$"
)
_ZH_CONJUNCTIONS = "及和与、跟"
_ZH_PERSON_NOUN = re.compile("医师|医生|护士|护师|药师|技师|治疗师|家属|联系人|监护人")
_ZH_STRONG_RIGHT = (
    "代诉|代述|代为|签字|签名|陪同|陪护|陪伴|陪诊|之母|之父|之子|之女|之妻|之夫|之孙|之兄|之弟|之姐|之妹|医生|医师|护士"
    "|主任|教授|老师|先生|女士|同志|老人|本人|自诉|自述|主诉|诉说|口述|告知|同意|拒绝|要求|表示|声称|述说|知情"
)
_ZH_WEAK_RIGHT = (
    "因|于|诉|述|称|说|的|是|为|在|和|与|及|、|等|今|昨|入院|来院|就诊|复诊|出院|住院|现|既往|平素|性别|年龄"
    "|沟通|交代|谈话|商量|联系|送入|送来|送至|送院|探视|签署|了解|同住|照顾|照护|电话|手机|到场|在场|来电|致电"
    "|带来|带着|共同|一起|一同|负责|将"
)
_ZH_DEMOGRAPHIC_RIGHT = re.compile(r"[ \t]*[，,、]?[ \t]*[(（]?[男女]性?(?=$|[，,、\s。；;)）\d])")
_ZH_STRONG_RIGHT_RE = re.compile(_ZH_STRONG_RIGHT)
# A bracketed department, role or kinship after a name: 沈某某（肿瘤内科）, 某某（患者孙女）, 某某（ICU）.
_ZH_ROLE_IN_BRACKETS = re.compile(
    rf"[ \t]*[（(][^（）()\n]{{0,8}}?(?:科|室|组|中心|医师|医生|护士|药师|患者|病人|家属|{_ZH_RELATION_WORDS}|[A-Z]{{2,4}}[）)])"
)
_ZH_WEAK_RIGHT_RE = re.compile(_ZH_WEAK_RIGHT)
# A given name never starts with a cue or a role word: 王医生, 向家属 are not names.
_ZH_CUE_INSIDE = re.compile(
    rf"{_ZH_STRONG_RIGHT}|{_ZH_RELATION_WORDS}|{_ZH_PATIENT_WORDS}|入院|来院|就诊|复诊|出院|住院|既往|平素|性别|年龄"
)
# Clinical words that look like surname + given name and that jieba's dictionary misses or tags as names.
_ZH_NOT_NAMES = set(
    "高血压 高血糖 高血脂 高热 高烧 高压 高危 高度 高龄 高钾 高钙 高钠 高尿酸 高渗 高频 高脂 高糖 黄疸 黄染 黄体 黄斑"
    " 黄芪 黄连 白细胞 白蛋白 白苔 白内障 白血病 白带 白介素 常规 方案 方法 安静 安定 平素 平稳 平卧 平静 明显 明确"
    " 全身 全麻 全血 周身 周围 周期 时间 康复 石膏 包块 包膜 毛发 毛细 苏醒 张口 张力 舒张 程度 于是 向心 华法林 余无"
    " 连续 单侧 单纯 甘油 甘露醇 谷丙 谷草 尿常规 血常规 便常规 冷汗 冷敷 易怒 易感 柏油 雷诺 鲍曼 管道 管腔 宫颈"
    " 宫腔 宫内 宫高 宫缩 门诊 严重 严格 蒙脱石 卫生 车祸 计划 支架 支气管 房颤 房性 房室 应激 应用 原因 原发 位置"
    " 信号 相关 初步 初次 初诊 龙胆 关节 左侧 尚可 尚未 申请 查体 查房 劳累 皮肤 皮疹 皮下 区域 强直 豆类 危险"
    " 危重 万古霉素 艾滋 阳性 阴性 农药 项目 费用 党参 米索 桂枝 柴胡 葛根 甘草 麻木 麻醉 麻疹 迟缓 巩膜 利尿"
    " 利多卡因 干咳 干燥 束支 衣服 展示 智力 植物 富含 叶酸 牛奶 温度 文献 颜色 颜面 焦虑 梅毒 凌晨 单位 霍乱 涂片"
    " 曲张 游离 辛辣 解除 解热 窦性 简单 季节 盛行 费力 范围 夏季 方便 白天 孟鲁司特 宁可 符合 舒适 余量 程序"
    " 苏打 任何 何时 许多 钱币 金属 石头 夏天 齐全 祖父 祖母 母乳 羊水 鲜血 鲜红 印象 隆起 玉米 银屑病 亢进 居住"
    # jieba's dictionary tags these as person names.
    " 陈述 张开 周转 明白 宁静 安抚 原谅 容纳 杜绝 许可 陈列 修正 白领 胡子 叶子 毛巾 范畴 周密 朴素 华丽 阳光"
    " 古老 冷笑 谢谢 关怀 温泉 卓越 晋升 祝贺 师傅 顾问 顾客 祖先 智慧 诸如".split()
)


class _NameTagger:
    """jieba, loaded once and lazily: POS tags for the clauses of one text and its dictionary of common words."""

    _lock = threading.Lock()
    _posseg = None
    _tags: dict[str, str] = {}
    _frequencies: dict[str, int] = {}

    @classmethod
    def _load(cls):
        if cls._posseg is None:
            with cls._lock:
                if cls._posseg is None:
                    import logging

                    import jieba
                    import jieba.posseg

                    jieba.setLogLevel(logging.WARNING)
                    jieba.posseg.dt.initialize()
                    cls._tags, cls._frequencies = jieba.posseg.dt.word_tag_tab, jieba.dt.FREQ
                    cls._posseg = jieba.posseg
        return cls._posseg

    def __init__(self, text: str) -> None:
        self._text = text
        self._breaks = [m.start() for m in _CLAUSE_BREAK.finditer(text)]
        self._clauses: dict[tuple[int, int], set[tuple[int, int]]] = {}

    def frequency(self, word: str) -> int:
        self._load()
        return self._frequencies.get(word, 0)

    def common_word(self, word: str, min_frequency: int) -> bool:
        """A dictionary word, not tagged as a person name, seen at least min_frequency times (高热, 黄疸)."""
        self._load()
        tag = self._tags.get(word)
        return tag is not None and not tag.startswith("nr") and self.frequency(word) >= min_frequency

    def is_name(self, start: int, end: int) -> bool:
        """Does jieba, reading the whole clause, see a person name at text[start:end]?"""
        before = bisect.bisect_left(self._breaks, start)
        left = self._breaks[before - 1] + 1 if before else 0
        after = bisect.bisect_left(self._breaks, end)
        right = self._breaks[after] if after < len(self._breaks) else len(self._text)
        names = self._clauses.get((left, right))
        if names is None:
            names, offset = set(), left
            for word, flag in self._load().cut(self._text[left:right]):
                if flag.startswith("nr"):
                    names.add((offset, offset + len(word)))
                offset += len(word)
            self._clauses[(left, right)] = names
        return (start, end) in names


_CLAUSE_BREAK = re.compile(r"[，,。；;！!？?\n：:、（）()\s]")


def _looks_like_a_word(candidate: str, single_surname: bool, tagger: _NameTagger) -> bool:
    """高热, 黄疸: a common word, or (for three characters) a very common word and one more character."""
    if tagger.common_word(candidate, min_frequency=20):
        return True
    return single_surname and len(candidate) > 2 and tagger.common_word(candidate[:2], min_frequency=100)


def _given_ok(given: str) -> bool:
    return all(_is_han(char) and char not in _NOT_GIVEN for char in given)


def _zh_left(text: str, start: int, name_ends: set[int]) -> str:
    """What announces a name at `start`: 'label', 'role_label', 'relation', 'patient', 'weak', 'edge' or ''."""
    if start > 0 and text[start - 1] in _ZH_CONJUNCTIONS and start - 1 in name_ends:
        return "relation"  # 白雪及温馨: a name joined to a name already found
    match = _ZH_LEFT.search(text, max(0, start - 14), start)
    if not match:
        return "edge" if start == 0 or not _is_han(text[start - 1]) else ""
    cue = next(group for group in ("name_label", "role_label", "patient", "relation", "weak") if match.group(group))
    colon = bool(match.group("colon"))
    if match.group("then") or (cue == "role_label" and not colon and _ZH_PERSON_NOUN.search(match.group())):
        return "relation"  # 联系人：侄子钱浩然, 主治医师李明华
    if cue == "role_label" and not colon:
        return ""  # 麻醉全麻: without a colon a role label is just a word
    if cue == "name_label" or (cue == "patient" and colon):
        return "label"
    return "field" if cue == "role_label" else cue


def _zh_right(text: str, end: int) -> str:
    """'demographic', 'strong', 'weak', 'edge', 'digit' or '' (more Han text follows)."""
    if _ZH_DEMOGRAPHIC_RIGHT.match(text, end):
        return "demographic"
    if end >= len(text):
        return "edge"
    if _ZH_ROLE_IN_BRACKETS.match(text, end):
        return "strong"
    if text[end].isdigit():
        return "digit"
    if not _is_han(text[end]):
        return "edge"
    if _ZH_STRONG_RIGHT_RE.match(text, end):
        return "strong"
    if _ZH_WEAK_RIGHT_RE.match(text, end):
        return "weak"
    return ""


def _zh_accepts(left: str, right: str, word: bool, tagged: Callable[[], bool]) -> bool:
    """How much context a candidate needs depends on how clearly the left side announces a person."""
    if left == "label":
        return bool(right) or tagged()
    if left == "field" and right in ("edge", "demographic", "strong"):
        return True  # 记录人：白云 filling the field: a name, even one that is also a word
    if left == "compound":
        return bool(right) and not word
    if left in ("field", "relation"):
        return (bool(right) or tagged()) and not (left == "field" and word)
    if left == "patient":
        if right in ("demographic", "strong"):
            return True
        return not word and (bool(right) or tagged())
    if left in ("weak", "edge"):
        if right in ("demographic", "strong"):
            return True
        return right in ("weak", "edge") and not word and tagged()
    return False


def _chinese_name_at(text: str, start: int, surname: str, tagger: _NameTagger, name_ends: set[int]) -> int | None:
    left = _zh_left(text, start, name_ends)
    if surname in _RARE_COMPOUND_SURNAMES and left in ("", "weak", "edge"):
        left = "compound"
    if not left:
        return None
    after = start + len(surname)
    if _ZH_CUE_INSIDE.match(text, after):
        return None  # 王医生, 李主任: a surname and a title
    for given_len in (2, 1):
        end = after + given_len
        given = text[after:end]
        if len(given) < given_len or not _given_ok(given) or _ZH_CUE_INSIDE.search(text, after, end + 1):
            continue
        # 张伟因…: the second given character is a one-character cue, so the name is the shorter one.
        if given_len == 2 and _ZH_WEAK_RIGHT_RE.match(text, end - 1) and _zh_right(text, end - 1):
            continue
        candidate = text[start:end]
        if candidate in _ZH_NOT_NAMES or candidate[:2] in _ZH_NOT_NAMES:
            continue
        right = _zh_right(text, end)
        tagged = functools.partial(tagger.is_name, start, end)  # jieba runs only when needed
        word = _looks_like_a_word(candidate, len(surname) == 1, tagger) and not tagged()
        # Without a cue, a dictionary entry is a word whatever its tag (燕麦 is oats before it is a person).
        word = word or (left in ("weak", "edge") and tagger.frequency(candidate) >= 50)
        if _zh_accepts(left, right, word, tagged):
            return end
    return None


_ZH_LABELLED_ANY_NAME = re.compile(
    rf"(?:{_ZH_NAME_LABELS})[ \t]*[:：][ \t]*(?P<v>[{HAN}](?:[ \t]?[{HAN}·]){{1,3}}?)(?=$|[^{HAN}·]|性别|年龄|男|女)"
)


def _chinese_names(text: str, tagger: _NameTagger) -> list[_Candidate]:
    found, name_ends = [], set()
    for match in _ZH_SURNAME_AT.finditer(text):
        start, surname = match.start(), match.group("s")
        end = _chinese_name_at(text, start, surname, tagger, name_ends)
        if end is None and len(surname) == 2:
            end = _chinese_name_at(text, start, surname[0], tagger, name_ends)
        if end is not None:
            found.append((start, end, "NAME", _PRIO_NAME))
            name_ends.add(end)
    # A labelled name whose surname is missing from the list.
    found += [(m.start("v"), m.end("v"), "NAME", _PRIO_NAME - 1) for m in _ZH_LABELLED_ANY_NAME.finditer(text)]
    return found


# ---------------------------------------------------------------------------------------------
# English names
# ---------------------------------------------------------------------------------------------

# Latin-1 and Latin Extended-A letters, so Horák, Ruíz and Inés are one word, not a word cut short.
_UPPER = "A-ZÀ-ÖØ-Þ"
_LOWER = "a-zß-öø-ÿā-ž"
_EN_NAME_WORD = rf"(?:[A-Z]['’])?(?:Mc|Mac|De|Van|Von|La|Le|Di|Da)?[{_UPPER}][{_LOWER}]+(?:-[{_UPPER}{_LOWER}][{_LOWER}]+)?"
_EN_TOKEN = re.compile(rf"{_EN_NAME_WORD}(?![\w])|[A-Z]\.(?!\w)")
_EN_CAPS_TOKEN = re.compile(r"(?![IVX]+(?![\w-]))[A-Z]{2,}(?:-[A-Z]{2,})?(?![\w])")
_EN_PEOPLE = (
    r"physician|provider|doctor|surgeon|attending|resident|fellow|intern|nurse|rn|np|pa|pcp|endoscopist"
    r"|anesthesia|anesthesiologist|anesthetist|consultant|clinician|midwife|scribe|therapist|pharmacist"
    r"|contact|proxy|guardian|caregiver|interpreter|translator|chaperone|witness|informant|driver|spouse"
)
_EN_RELATION = (
    r"daughter|son|wife|husband|mother|father|brother|sister|spouse|partner|friend|niece|nephew|grandson"
    r"|granddaughter|grandmother|grandfather|grandparent|aunt|uncle|cousin|guardian|caregiver|neighbou?r|mom|dad"
    r"|roommate|housemate|flatmate|landlord|landlady|co-?worker|colleague|employer|boss|teacher|coach|girlfriend"
    r"|boyfriend|gf|bf|fianc[ée]e?|stepmother|stepfather|stepson|stepdaughter|daughter-in-law|son-in-law"
    r"|interpreter|translator|chaperone|witness|guide|aide|sitter|babysitter|nanny|proxy|surrogate|poa|hcp"
    r"|chaplain|pastor|attorney|lawyer|therapist|counsell?or|pharmacist|physician|doctor|surgeon|nurse|midwife"
    r"|doula|pcp|attending|resident|grandma|grandpa|granny|nana|grandad|auntie|hubby|sis|bro"
)
_EN_NOT_NAMES = set(
    """
    January February March April May June July August September October November December Jan Feb Mar Apr Jun Jul
    Aug Sep Sept Oct Nov Dec Monday Tuesday Wednesday Thursday Friday Saturday Sunday Mon Tue Tues Wed Thu Thur
    Thurs Fri Sat Sun Today Tonight Yesterday Tomorrow Morning Evening Night Afternoon Now Then Later Also However
    The A An And Or But If In On At By For From To With Without Of Per Via As Is Was Were Are Be Been Has Had Have
    He She They We I It His Her Hers Their Them Our You Your My This That These Those There Here Who Which What
    When While Where Why How After Before During Since Until Upon Over Under Denies Reports States Notes No Not Yes
    Hi Hello Dear Thanks Thank Regards Sincerely Best Please Re Subject Sent Baby Boy Girl Pronouns
    Patient Patients Pt Mr Mrs Ms Miss Dr Doctor Prof Professor Nurse Sister Brother Mother Father Son Daughter
    Wife Husband Family Friend Name Age Sex Male Female Man Woman Infant Child Adult Elderly Signed Parent Parents
    Hospital Clinic Center Centre Medical Medicine Health Healthcare University College Institute School General
    Memorial Regional Community Children Childrens County City State National Saint St Mount Mt Department Dept
    Emergency Room Unit Ward Service Services Floor Bed Suite Office Lab Laboratory Pharmacy Radiology Cardiology
    Neurology Oncology Surgery Surgical Pediatrics Paediatrics Internal Intensive Care Critical Primary Urgent
    Association Society Agency Group Partners Practice Associates Foundation Trust Inc Llc Corp Company Team
    Street Avenue Road Boulevard Lane Drive Court Way Place Terrace Circle Parkway Highway Square Apt Apartment
    North South East West Northern Southern Eastern Western New Old Upper Lower Left Right Chest Heart Blood Pain
    History Exam Examination Assessment Plan Impression Diagnosis Diagnoses Discharge Admission Admitted Summary
    Chief Complaint Present Illness Past Social Medications Medication Allergies Allergy Vitals Vital Labs Imaging
    Disease Syndrome Cancer Tumor Type Stage Grade Class Level Score Scale Test Normal Abnormal Positive Negative
    Acute Chronic Severe Mild Moderate Stable Unstable Follow Return Continue Start Stop Take Given Started Seen
    Insurance Medicare Medicaid Contact Phone Tel Email Address Home Work Date Time Record Number Reason Consult
    Note Notes Report Letter Visit Procedure Findings Recommendations Indication Interpreter Translator Driver
    Parkinson Alzheimer Crohn Hodgkin Graves Cushing Addison Down Bell Kaposi Hashimoto Guillain Barre Tourette
    Tylenol Advil Motrin Aspirin Lipitor Metformin Insulin Lasix Coumadin Warfarin Heparin Plavix Zoloft Prozac
    Xanax Norvasc Lisinopril Amoxicillin Augmentin Keflex Zithromax Prednisone Albuterol Ventolin Eliquis Xarelto
    English Chinese Spanish American Asian African Caucasian Hispanic Latino Catholic Christian Jewish Muslim
    Christmas Easter Thanksgiving Covid Afib Nausea Vomiting Fever Cough Weight Height Vitamin Nodule Ultrasound
    Practitioner Assistant Manager Worker Staff Coordinator Educator Specialist Navigator Technician Tech Services
    Consulted Discussed Called Paged Contacted Examined Evaluated Referred Notified Informed Spoke Met Reviewed
    Dictated Transcribed Updated Spoken Appreciate Attended Accompanied Brought Escorted Visited Per
    Outgoing Incoming Oncoming Offgoing Handover Handoff Rev Fr Member Subscriber Beneficiary Insured Wrote
    Physical Occupational Speech Therapy Social Pharmacy Diet Protocol Program Results Levels
    """.split()
)
# Role words are capitalised at the start of a line ("Attending Beatriz Souza, MD") but are never a name.
_EN_NOT_NAMES |= {word.capitalize() for word in re.findall(r"[a-z]+", _EN_PEOPLE + "|" + _EN_RELATION)}
_EN_NOT_NAMES |= {"Referring", "Requesting", "Discharging", "Admitting", "Consulting", "Treating", "Primary"}
_EN_NOT_NAMES_UPPER = {word.upper() for word in _EN_NOT_NAMES} | set(
    "DOB MRN ID SSN ICU ER ED BP HR RR WBC CT MRI ECG EKG USA US UK MD RN NP PA DO PHD CNM CRNA".split()
)
_EN_TITLE = re.compile(r"\b(?:Dr|Mr|Mrs|Ms|Mx|Prof|Rev|Fr)\.?[ \t]+|\b(?:Miss|Doctor|Professor|Pastor|Father)[ \t]+")
# "Neoplasm Name: Pilocytic Astrocytoma" (MedPix), "Drug name: Warfarin": the name of a thing, not a person.
_THING_NAMES = (
    "neoplasm", "tumor", "tumour", "lesion", "disease", "condition", "diagnosis", "syndrome", "organism", "drug",
    "medication", "product", "brand", "generic", "trade", "chemical", "test", "procedure", "device", "study", "file",
)
_NOT_AFTER_THING = "".join(rf"(?<!{word}[ \t])" for word in _THING_NAMES)
_EN_LABEL = re.compile(
    rf"(?:^|(?<=[\s;,(|]))(?:(?:[\w-]+[ \t]+){{0,2}}{_NOT_AFTER_THING}name\b[^:\n]{{0,30}}|surname|forename|patient|pt|re"
    r"|next[ \t]+of[ \t]+kin|nok|poa|hcp"
    rf"|mother|father|parent|(?:[\w-]+[ \t]+){{0,2}}(?:{_EN_PEOPLE}|representative|member|subscriber|insured|beneficiary"
    r"|enrollee|policyholder)s?\b(?:(?:[ \t]+[a-z]+){2,4})?|(?:electronically[ \t]+)?signed(?:[ \t]+by)?"
    r"|(?:dictated|reviewed|transcribed|referred|requested|seen)[ \t]+by)[ \t]*:[ \t]*",
    re.IGNORECASE | re.MULTILINE,
)
_ZH_LABEL_BEFORE_LATIN = re.compile(rf"(?:{_ZH_NAME_LABELS}|英文名|英文姓名|拼音|联系人|家属)[ \t]*[:：][ \t]*(?=[A-Z])")
_EN_ROLE = re.compile(
    rf"\b(?i:patient|pt\.?|{_EN_RELATION}|case[ \t]+manager|social[ \t]+worker|coordinator|navigator|specialist|liaison)"
    r",?[ \t]+"
    # A credential before a name, as handovers write it: "report given by RN Jane Doe".
    r"|\b(?:RN|LPN|NP|PA|CNA|RT)[ \t]+(?=[A-Z][a-z])"
)
# A nickname: 'goes by "Bud"', 'known as Peggy'.
_EN_NICKNAME = re.compile(
    r"\b(?i:goes[ \t]+by|known[ \t]+as|prefers[ \t]+to[ \t]+be[ \t]+called|nicknamed?|a\.k\.a\.?)[ \t]+[\"“'‘]?"
)
_EN_BY = re.compile(r"\bby[ \t]+")
_EN_SIGN_OFF = re.compile(
    r"\b(?i:yours[ \t]+(?:sincerely|truly|faithfully)|sincerely|(?:kind|best|warm)[ \t]+regards|regards|thanks"
    r"|thank[ \t]+you|many[ \t]+thanks|best[ \t]+wishes|cheers|respectfully),?[ \t]*\n?[ \t]*"
)
_EN_CREDENTIALS = (
    r"M\.?D\.?|D\.?O\.?|R\.?N\.?|N\.?P\.?|P\.?A\.?(?:-C)?|CNM|CRNA|LPN|APRN|FNP(?:-BC)?|DNP|Ph\.?D\.?|PharmD"
    r"|MBBS|MBChB|FRCP|FACC|FACS|LCSW|MSW|DDS|DMD|DPM|CNS|RRT|RD|MPH"
)
_EN_AFTER_NAME = re.compile(
    rf"['’]s[ \t]+(?:{_EN_RELATION}|[a-z]+[ \t]+(?:{_EN_RELATION}))\b"
    rf"|,?[ \t]+(?:{_EN_CREDENTIALS})(?![A-Za-z])(?![ \t]*:)"  # but "Charge RN:" is a label
    rf"|[ \t]*\((?i:{_EN_RELATION}|patient|pt|[a-z]+['’]s[ \t]+(?:{_EN_RELATION}))\)"
    rf"|,[ \t]+(?:his|her|their|the[ \t]+patient['’]s|pt['’]s)[ \t]+(?:{_EN_RELATION})\b"
    # Demographics right after a name: "Frank Delgado, 58M", "Giuseppe Moretti | DOB", "Jordan is a 24-year-old".
    r"|(?:,|[ \t]*\|)?[ \t]*(?:\d{1,3}[ \t]?(?:[MFmf]|yo|y/o|y\.o\.|-?year-old|years?[ \t]+old)(?![A-Za-z])|\(?DOB\b)"
    r"|[ \t]+is[ \t]+an?[ \t]+\d{1,3}[- ]?(?:year|yo|y/o|y\.o\.|month|week|day)"
)
_EN_AFTER_FULL_NAME = re.compile(
    r"[ \t]+(?:reports|reported|states|stated|says|said|denies|denied|notes|noted|endorses|complains|presents"
    r"|presented|is[ \t]+a|was[ \t]+seen|was[ \t]+admitted|signed|agrees|agreed|consented|declined|called|arrived"
    r"|wrote|writes|replied|messaged|texted)\b"
    # A role in brackets after a full name: "Jane Doe (Clinical Nurse Specialist)", but not "(Pathology)".
    rf"|[ \t]*\([^()\n]{{0,40}}?\b(?i:{_EN_PEOPLE}|specialist|coordinator|manager|worker|educator|chaplain|pharmacist)\b"
)
_EN_CAPS_SEQ = re.compile(rf"(?<![\w.'’-])(?:{_EN_NAME_WORD}|[A-Z]\.)(?:[ \t]+(?:{_EN_NAME_WORD}|[A-Z]\.)){{0,3}}(?![\w-]|\.\w)")
# "J. Smith", but not "Vitamin D. Levels" or "Part D. Physical": a letter that names a thing, not a person.
_EN_INITIALS = re.compile(
    r"(?<![\w.°/])(?<!Part )(?<!Vitamin )(?<!Type )(?<!Stage )(?<!Grade )(?<!Class )(?<!Level )(?<!Hepatitis )"
    r"(?<!Factor )(?<!Lead )(?<!Phase )(?<!Group )(?<!Zone )(?<!Appendix )(?<!Schedule )(?<!Section )"
    rf"[A-Z]\.[ \t]?(?:[A-Z]\.[ \t]?)?{_EN_NAME_WORD}(?![\w])"
)


_LAB_RESULT = re.compile(r"[ \t]*:[ \t]*(?i:negative|positive|not[ \t]+detected|detected|neg\b|pos\b)")
_EN_GAP = re.compile(r"[ \t]+|,[ \t]+")
_HAN_NAME_IN_BRACKETS = re.compile(rf"[ \t]*[(（][ \t]*(?P<v>[{HAN}]{{2,4}})[ \t]*[)）]")


def _english_name_at(text: str, pos: int, *, allow_caps: bool = False, max_words: int = 4) -> tuple[int, int] | None:
    """(start, end) of the person name at `pos`, skipping a title, or None."""
    title = _EN_TITLE.match(text, pos)
    start = cursor = title.end() if title else pos
    end, words, commas = None, 0, 0
    while words < max_words:
        match = _EN_TOKEN.match(text, cursor) or (allow_caps and _EN_CAPS_TOKEN.match(text, cursor))
        if not match:
            break
        token = match.group()
        if _is_non_name(token) or token in _EN_NOT_NAMES_UPPER:
            break
        if words and text.startswith(":", match.end()):
            break  # "Name: John Smith Religion: none"; but "Per Dr Adeyemi: continue" is a name
        words, cursor = words + 1, match.end()
        if not (len(token) == 2 and token.endswith(".")):
            end = cursor  # a name ends on a word, not on an initial
        gap = _EN_GAP.match(text, cursor)
        if not gap:
            break
        if gap.group().startswith(","):
            if not allow_caps or commas or words != 1:
                break  # "DOE, JANE" and "Doe, Jane" only in labelled fields
            commas += 1
        cursor = gap.end()
    return (start, end) if end else None


def _names_after(text: str, cues, **options) -> list[_Candidate]:
    found = []
    for cue in cues:
        span = _english_name_at(text, cue.end(), **options)
        if span:
            found.append((*span, "NAME", _PRIO_NAME))
    return found


def _is_non_name(token: str) -> bool:
    return token.rstrip(".") in _EN_NOT_NAMES


def _names_before_cues(text: str) -> list[_Candidate]:
    """Capitalised words followed by what only follows a person: 's daughter, ", MD", ", 58M", "reports"."""
    found = []
    for match in _EN_CAPS_SEQ.finditer(text):
        tokens = list(re.finditer(r"\S+", match.group()))
        while tokens and _is_non_name(tokens[0].group()):
            tokens.pop(0)  # "Attending Beatriz Souza, MD"
        if not tokens or any(_is_non_name(token.group()) for token in tokens) or tokens[-1].group().endswith("."):
            continue
        start, end = match.start() + tokens[0].start(), match.end()
        if _EN_AFTER_NAME.match(text, end) or (len(tokens) >= 2 and _EN_AFTER_FULL_NAME.match(text, end)):
            found.append((start, end, "NAME", _PRIO_NAME))
    return found


def _english_names(text: str) -> list[_Candidate]:
    found = _names_after(text, _EN_TITLE.finditer(text))
    found += _names_after(text, _EN_LABEL.finditer(text), allow_caps=True)
    found += _names_after(text, _ZH_LABEL_BEFORE_LATIN.finditer(text), allow_caps=True)
    found += _names_after(text, _EN_ROLE.finditer(text), max_words=3)
    found += _names_after(text, _EN_SIGN_OFF.finditer(text), max_words=3)
    found += _names_after(text, _EN_NICKNAME.finditer(text), max_words=2)
    found += [c for c in _names_after(text, _EN_BY.finditer(text), max_words=3) if " " in text[c[0] : c[1]]]
    found += _names_before_cues(text)
    for match in _EN_INITIALS.finditer(text):
        if _LAB_RESULT.match(text, match.end()):
            continue  # "S. Pneumonia: Negative": an organism on a laboratory panel
        if not _is_non_name(match.group().split(".")[-1].strip()):
            found.append((match.start(), match.end(), "NAME", _PRIO_NAME))
    # The name in Chinese characters right after its romanisation: "Wang Fang (王芳)".
    for _start, end, _kind, _priority in list(found):
        han = _HAN_NAME_IN_BRACKETS.match(text, end)
        if han:
            found.append((*han.span("v"), "NAME", _PRIO_NAME))
    return found


# ---------------------------------------------------------------------------------------------
# Simple "| a | b |" tables: the header row says what each column holds
# ---------------------------------------------------------------------------------------------

_TABLE_ROW = re.compile(r"^[ \t]*\|(.*)\|[ \t]*$", re.MULTILINE)
_TABLE_CELL = re.compile(r"[^|]+")
_NAME_COLUMN = re.compile(r"姓名|患者|病人|签名|医师|医生|护士|(?i:name|patient|signed|nurse|physician)")
_MRN_COLUMN = re.compile(rf"(?:{_MRN_LABELS})")
_NAME_CELL = re.compile(rf"[{HAN}]{{2,4}}|{_EN_NAME_WORD}(?:[ \t]+{_EN_NAME_WORD}){{1,3}}|{_EN_NAME_WORD},[ \t]*{_EN_NAME_WORD}")
_MRN_CELL = re.compile(r"[A-Za-z]{0,4}[-]?\d[\dA-Za-z-]{3,}")


def _cells(text: str, row: re.Match) -> list[tuple[int, int]]:
    """Stripped (start, end) of each cell of a table row."""
    spans = []
    for cell in _TABLE_CELL.finditer(text, row.start(1), row.end(1)):
        value = cell.group()
        start = cell.start() + len(value) - len(value.lstrip())
        spans.append((start, start + len(value.strip())))
    return spans


def _column_kind(header: str) -> str | None:
    if _MRN_COLUMN.search(header):
        return "MRN"
    return "NAME" if _NAME_COLUMN.search(header) else None


def _table_cells(text: str) -> list[_Candidate]:
    """Names and record numbers in table columns headed 姓名, 住院号, MRN...: a cell has no other context."""
    found, kinds, previous_end = [], [], -2
    for row in _TABLE_ROW.finditer(text):
        cells = _cells(text, row)
        if row.start() != previous_end + 1:  # a new table: this row is its header
            kinds = [_column_kind(text[start:end]) for start, end in cells]
        else:
            for kind, (start, end) in zip(kinds, cells, strict=False):
                pattern = _NAME_CELL if kind == "NAME" else _MRN_CELL if kind == "MRN" else None
                if pattern and pattern.fullmatch(text, start, end):
                    found.append((start, end, kind, _PRIO_LABELLED))
        previous_end = row.end()
    return found


# ---------------------------------------------------------------------------------------------
# Putting it together
# ---------------------------------------------------------------------------------------------


def _overlaps(intervals: list[tuple[int, int]], start: int, end: int) -> bool:
    """Does [start, end) overlap one of `intervals`, which are sorted and do not overlap each other?"""
    index = bisect.bisect_left(intervals, (start, end))
    return (index > 0 and intervals[index - 1][1] > start) or (index < len(intervals) and intervals[index][0] < end)


def _resolve(candidates: list[_Candidate], blocked: list[tuple[int, int]]) -> list[tuple[int, int, str]]:
    """Greedy: higher priority first, then longer; never touch an existing placeholder."""
    taken: list[tuple[int, int]] = []
    kinds: dict[tuple[int, int], str] = {}
    for start, end, kind, _priority in sorted(candidates, key=lambda c: (-c[3], c[0] - c[1], c[0])):
        if end > start and not _overlaps(blocked, start, end) and not _overlaps(taken, start, end):
            bisect.insort(taken, (start, end))
            kinds[start, end] = kind
    return [(start, end, kinds[start, end]) for start, end in taken]


def _echo_terms(names: set[str]) -> set[str]:
    """What else to mask once a name is known: the name itself and, for Latin names, each part of it."""
    terms = set(names)
    for name in names:
        if not _HAN_CHAR.search(name):
            terms |= {part for part in name.split() if len(part) >= 3 and part not in _EN_NOT_NAMES}
    return terms


# Names that are also common English words: echoed only as capitalised, never as "will" or "park".
_EN_WORD_NAMES = set(
    """will may june april august mark bill grace hope faith joy rose dawn summer page hunter ward price young long white
    black brown green gray grey stone hill king little moody park rich sterling cash love wise strong baker cook
    miller fisher mason carter parker turner walker hall wood woods bell ball banks lane field fields rice cole
    art pat sue ray don max jack guy bob gene frank sunny autumn ivy lily iris violet daisy ruby amber crystal
    angel chance christian major noble rock sharp small tiny best good day may morning night case""".split()
)


def _echoes(text: str, names: set[str]) -> list[_Candidate]:
    """Every occurrence of a name already found, wherever it appears in the text.

    Latin names are matched regardless of case ("hi dr patel" in a portal message), except the
    ones that are also ordinary words, which must keep their capital.
    """
    terms = sorted(_echo_terms(names), key=len, reverse=True)  # longest first: 张伟 inside 张伟伟 loses
    han = "|".join(re.escape(term) for term in terms if _is_han(term[0]))
    latin = "|".join(
        re.escape(term) if term.casefold() in _EN_WORD_NAMES or " " in term else f"(?i:{re.escape(term)})"
        for term in terms
        if not _is_han(term[0])
    )
    alternatives = ([han] if han else []) + ([rf"(?<![\w'’-])(?:{latin})(?![\w-])"] if latin else [])
    pattern = re.compile("|".join(f"(?:{alternative})" for alternative in alternatives))
    return [(m.start(), m.end(), "NAME", _PRIO_ECHO) for m in pattern.finditer(text)]


def _detect(text: str, known_names: frozenset[str] | set[str] = frozenset()) -> list[PhiSpan]:
    if not text:
        return []
    candidates = _pattern_identifiers(text)
    candidates += _labelled(_LABELLED_ID, "ID", text, min_digits=4)
    candidates += _labelled(_LABELLED_MRN, "MRN", text, min_digits=3)
    candidates += _labelled(_LABELLED_PHONE, "PHONE", text, min_digits=7)
    candidates += _dates(text) + _ages(text) + _table_cells(text)
    # Notes mix languages (an English name in a Chinese record, and the reverse), so each language's
    # rules run wherever the text holds its script, whatever the caller's hint: a hint never hides PHI.
    if _HAN_CHAR.search(text):
        candidates += _chinese_addresses(text) + _chinese_names(text, _NameTagger(text))
    if _LATIN_WORD.search(text):
        candidates += _english_addresses(text) + _english_names(text)
    blocked = [m.span() for m in _PLACEHOLDER.finditer(text)]
    spans = _resolve(candidates, blocked)
    names = {text[s:e] for s, e, kind in spans if kind == "NAME" and e - s >= 2} | set(known_names)
    if names:
        spans = _resolve(candidates + _echoes(text, names), blocked)
    return [PhiSpan(start, end, kind, text[start:end]) for start, end, kind in spans]


def detect_phi(text: str, language: str | None = None) -> list[PhiSpan]:
    """Non-overlapping spans sorted by start. language 'zh'/'en'/None (auto: both rule sets run).

    The hint does not narrow detection: clinical notes mix languages, so the rules of each language
    run on whatever part of the text is written in its script.
    """
    return _detect(text)


class Deidentifier:
    """One per case: placeholders stay consistent across all fields of that case."""

    def __init__(self) -> None:
        self._placeholders: dict[tuple[str, str], str] = {}
        self._counts: dict[str, int] = {}
        self._replacements: dict[str, str] = {}
        self._names: set[str] = set()

    def deidentify(self, text: str, language: str | None = None, *, echo_names: bool = True) -> str:
        """`text` with each PHI span replaced by a typed placeholder such as [NAME_1] or [PHONE_2].

        One value (after normalisation) gets one placeholder for the whole case; numbering is per kind,
        in order of first appearance. Placeholders are never detected again, so this is idempotent.
        Names found in earlier fields are masked here too unless ``echo_names`` is False: diagnosis labels
        are checked on their own, because a disease named in the note ("Name: Pilocytic Astrocytoma") can be
        mistaken for a person there, and echoing it would erase the label.
        """
        if not text:
            return text
        parts, cursor = [], 0
        for span in _detect(text, self._names if echo_names else frozenset()):
            parts += [text[cursor : span.start], self._placeholder(span.kind, span.text)]
            cursor = span.end
            if span.kind == "NAME":
                self._names.add(span.text)  # so later fields of the case mask it too
        parts.append(text[cursor:])
        return "".join(parts)

    def _placeholder(self, kind: str, value: str) -> str:
        key = (kind, normalise(kind, value))
        placeholder = self._placeholders.get(key)
        if placeholder is None:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            placeholder = f"[{kind}_{self._counts[kind]}]"
            self._placeholders[key] = placeholder
            self._replacements[placeholder] = value
        return placeholder

    @property
    def replacements(self) -> dict[str, str]:
        """Placeholder -> original text, in the form first seen."""
        return dict(self._replacements)

    def identifiers(self) -> list[tuple[str, str]]:
        """(kind, normalised value) of every ID and MRN, in order of first appearance: for keyed pseudonyms."""
        return [key for key in self._placeholders if key[0] in ("ID", "MRN")]


def pseudonym(key: bytes, kind: str, value: str) -> str:
    """Stable keyed pseudonym: HMAC-SHA256(key, "KIND:normalised value"), hex, first 32 characters."""
    if not key:
        raise ValueError("a pseudonym needs a secret key: a bare hash of an identifier can be reversed")
    if kind not in KINDS:
        raise ValueError(f"unknown PHI kind: {kind!r}")
    message = f"{kind}:{normalise(kind, value)}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]
