"""Chinese TN rules that run BEFORE wetext (normalize.py), for what a service bot says all day and wetext reads wrong:
e-mail and URLs, codes read digit by digit, money and discounts, units, negative fractions and percentages, dates
with leading zeros, years before/after Christ, quantities wetext mistakes for phone numbers, acronyms.

Each rule rewrites the text either into Chinese words (digits already read) or into a form wetext reads right. The
clause split (numbers never merged across a full-width comma) is in normalize.py.
"""
from __future__ import annotations

import re

DIGIT = "零一二三四五六七八九"
CODE_DIGIT = "零幺二三四五六七八九"     # digit by digit, 1 as 幺 (phone numbers, codes, flights, rooms)


def code_digits(s: str) -> str:
    return "".join(CODE_DIGIT[int(c)] if c.isascii() and c.isdigit() else c for c in s)


def plain_digits(s: str) -> str:
    return "".join(DIGIT[int(c)] if c.isascii() and c.isdigit() else c for c in s)


def _group(n: int) -> str:
    """0 < n < 10000 → 一千二百零五 (no leading 零)."""
    out, zero = "", False
    for unit, d in zip(("千", "百", "十", ""), f"{n:04d}"):
        if d == "0":
            zero = bool(out)
            continue
        if zero:
            out += "零"
            zero = False
        out += DIGIT[int(d)] + unit
    return out


def cardinal(s: str) -> str:
    """'110111111' → 一亿一千零一十一万一千一百一十一 (wetext's own style: 两 only as the leading 百/千/万/亿)."""
    n = int(s)
    if n == 0:
        return "零"
    groups = []
    while n:
        groups.append(n % 10000)
        n //= 10000
    out, pending_zero = "", False
    for i in range(len(groups) - 1, -1, -1):
        g = groups[i]
        if g == 0:
            pending_zero = bool(out)
            continue
        if out and (pending_zero or g < 1000):
            out += "零"
        pending_zero = False
        out += _group(g) + ("", "万", "亿", "万亿")[i]
    if out.startswith("一十"):
        out = out[1:]
    if out.startswith("二") and len(out) > 1 and out[1] in "百千万亿":
        out = "两" + out[1:]
    return out


# -- e-mail and URLs ------------------------------------------------------------------------------------------------
_URL_SYMBOLS = {".": "点", "@": "艾特", "/": "斜杠", ":": "冒号", "-": "杠", "_": "下划线", "?": "问号",
                "=": "等于", "&": "和", "#": "井号", "~": "波浪号", "+": "加", "%": "百分号"}
_EMAIL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_URL_RE = re.compile(r"(?:https?://|www\.)[A-Za-z0-9.-]+(?:/[A-Za-z0-9._~/?=&#%+-]*)?|"
                     r"\b[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.(?:com|cn|net|org|gov|edu|io)(?:\.cn)?\b(?:/[A-Za-z0-9._~/?=&#%+-]*)?")


def _spell_address(s: str) -> str:
    s = re.sub(r"^https?://", lambda m: m.group()[:-3] + " ", s)   # the scheme as letters, not "冒号斜杠斜杠"
    out = []
    for c in s.rstrip("/."):
        if c in _URL_SYMBOLS:
            out.append(_URL_SYMBOLS[c])
        elif c.isdigit():
            out.append(CODE_DIGIT[int(c)])
        else:
            out.append(c)
    return "".join(out)


# -- codes -----------------------------------------------------------------------------------------------------------
CODE_WORDS = ("验证码", "校验码", "动态码", "取件码", "提货码", "兑换码", "邀请码", "密码", "尾号", "订单号", "运单号",
              "快递单号", "单号", "工单号", "工号", "编号", "账号", "帐号", "卡号", "会员号", "手机号", "手机号码", "电话",
              "号码", "热线", "分机", "客服电话", "拨打", "致电", "航班号", "航班", "车次", "房间号", "房间", "房号",
              "邮编", "取餐号", "排队号", "车牌号", "身份证号", "QQ号", "微信号", "会议号", "房间号码")
_CODE_WORDS_RE = "|".join(sorted(CODE_WORDS, key=len, reverse=True))
# keyword, then (是|为|:|space)*, then the code: digits/letters/hyphens with at least one digit
_CODE_RE = re.compile(r"(?P<k>" + _CODE_WORDS_RE + r")(?P<sep>(?:[是为：:]|\s|是：)*)"
                      r"(?P<code>[A-Za-z]{0,3}\d[\dA-Za-z-]*(?<![-]))")
# letter+digit codes on their own: CA1234, G7, T3, MU5735, K8 (not 5G, not iPhone15)
_LETTER_CODE_RE = re.compile(r"(?<![A-Za-z0-9.])(?P<l>[A-Z]{1,3})(?P<d>\d{1,5})(?![\d.%A-Za-z])")
# numbers a service desk reads digit by digit
_MEASURE = "[米个元块号年月日天次人件克斤度岁分秒条张台辆本位名家页两毫厘公千万亿百十点倍折]"
_SERVICE_NUMBERS = {"110", "119", "120", "122", "114", "10086", "10010", "12306", "12315", "12345", "12123",
                    "12110", "12321", "95588", "95533", "95555", "95566", "95599", "95559", "95528", "95508"}
_MOBILE_RE = re.compile(r"(?<![\d.])1[3-9]\d{9}(?![\d.])")
_SERVICE_RE = re.compile(r"(?<![\d.,:/-])(?:" + "|".join(sorted(_SERVICE_NUMBERS, key=len, reverse=True))
                         + r"|400\d{7}|800\d{7}|400-\d{3}-\d{4}|800-\d{3}-\d{4})(?![\d.,:/%A-Za-z]|\s*" + _MEASURE + ")")
# bare integers wetext would read as a phone number (9–12 digits, or 1xx) that are quantities: read as cardinals
_BARE_INT_RE = re.compile(r"(?<![\d.,:/A-Za-z-])(?:[1-9]\d{8,11}|1\d{2})(?![\d.,:/%A-Za-z-])")


def _code(m: re.Match) -> str:
    code = m.group("code")
    return m.group("k") + m.group("sep") + code_digits(code.replace("-", " "))


# -- money -----------------------------------------------------------------------------------------------------------
CURRENCY_PREFIX = {"A$": "澳元", "AU$": "澳元", "HK$": "港元", "NT$": "新台币", "C$": "加元", "CA$": "加元",
                   "S$": "新加坡元", "US$": "美元", "$": "美元", "¥": "元", "￥": "元", "€": "欧元", "£": "英镑",
                   "₩": "韩元", "₹": "卢比", "₽": "卢布", "฿": "泰铢", "₫": "越南盾"}
_PREFIX_RE = "|".join(re.escape(p) for p in sorted(CURRENCY_PREFIX, key=len, reverse=True))
_MONEY_RE = re.compile(r"(?P<neg>[-−])?(?P<cur>" + _PREFIX_RE + r")\s*(?P<amt>\d+(?:\.\d+)?)(?P<mag>万亿|亿|万|千|百万)?"
                       r"(?P<suf>\s*(?:元|块钱|块|美元|欧元|英镑|人民币))?")
_ZERO_CENTS_RE = re.compile(r"(\d+)\.(\d*?)0+(?=\s*(?:元|块|美元|欧元|英镑|港元|澳元|日元|韩元|人民币))")
_DISCOUNT_RE = re.compile(r"(?<![\d.])(\d)\.(\d)\s*折")


def _money(m: re.Match) -> str:
    unit = CURRENCY_PREFIX[m.group("cur")]
    suf = (m.group("suf") or "").strip()
    if suf and unit == "元" and suf != "元":
        unit = suf
    amt = m.group("amt")
    if "." in amt:
        amt = amt.rstrip("0").rstrip(".")
    return ("负" if m.group("neg") else "") + amt + (m.group("mag") or "") + unit


# -- units (after a number, Chinese context) -------------------------------------------------------------------------
UNITS = {"mAh": "毫安时", "kWh": "千瓦时", "kW": "千瓦", "W": "瓦", "V": "伏", "mA": "毫安", "kg": "千克", "KG": "千克",
         "Kg": "千克", "g": "克", "mg": "毫克", "t": "吨", "km": "公里", "KM": "公里", "cm": "厘米", "mm": "毫米", "m": "米",
         "nm": "纳米", "mL": "毫升", "ml": "毫升", "L": "升", "GB": "G", "G": "G", "MB": "兆", "M": "兆", "KB": "K", "TB": "T",
         "Mbps": "兆", "Gbps": "G", "GHz": "吉赫兹", "MHz": "兆赫兹", "Hz": "赫兹", "ms": "毫秒", "min": "分钟", "h": "小时",
         "s": "秒", "kb": "K", "mb": "兆", "gb": "G", "m²": "平方米", "㎡": "平方米", "m³": "立方米", "km²": "平方公里",
         "cm²": "平方厘米", "dB": "分贝", "KB/s": "K每秒", "MB/s": "兆每秒", "m/s": "米每秒"}
_UNIT_ALT = "|".join(re.escape(u) for u in sorted(UNITS, key=len, reverse=True))
_UNIT_RE = re.compile(r"(?<![A-Za-z])(\d+(?:\.\d+)?)\s*(" + _UNIT_ALT + r")(?![A-Za-z0-9²³/])")
_PER_RE = re.compile(r"(?<=[元块角分次天月年人件个张份])\s*/\s*(" + _UNIT_ALT + r"|[\u4e00-\u9fff])(?![A-Za-z])")

# -- signs, fractions, dates ----------------------------------------------------------------------------------------
_NEG_FRACTION_RE = re.compile(r"(?<![\d/])[-−－](\d+)/(\d+)(?![\d/])")
_FRACTION_RE = re.compile(r"(?<=[\u4e00-\u9fff])([1-9]\d*)/([1-9]\d*)(?![\d/.])")   # 约1/3 (wetext: 三分之约一)
_NEG_PERCENT_RE = re.compile(r"(?<![\d.])[-−－](\d+(?:\.\d+)?)\s*[%％]")
_NEG_WORD_PERCENT_RE = re.compile(r"[-−－](?=[百千万]分之)")
_LEADING_ZERO_RE = re.compile(r"(?:(?<=[年\s])|^)0(\d)(?=\s*[月日号])|(?<=月)0(\d)(?=\s*[日号])")
_BC_DATE_RE = re.compile(r"(\d{1,4}年(?:\d{1,2}月)?(?:\d{1,2}[日号])?)\s*(?:b\.?c\.?|BC|B\.C\.)(?![A-Za-z])")
_ERA_RE = re.compile(r"(\d{1,4})\s*(?:(a\.?d\.?|AD|A\.D\.)|(b\.?c\.?|BC|B\.C\.))(?![A-Za-z])")
_ERA_YEAR_RE = re.compile(r"(公元前?)(\d{1,4})(?=年)")
_DOT_DATE_RE = re.compile(r"(?<!\d)(\d{4})[·・](\d{1,2})[·・](\d{1,2})(?!\d)")
_HMS_ZERO_RE = re.compile(r"(?<![\d:])(\d{1,2}):(\d{2}):(\d{2})(?![\d:])")
# three numbers joined by dots or slashes: a version (v1.2.3, iOS 17.4.1, 版本3.2.1, 2.3.1版), a yy/m/d or yy.m.d
# date (12/2/2, 12.2.3: the order 年月日 of Chinese dates), a m/d/yyyy date whose second part cannot be a month
_CUED_VERSION_RE = re.compile(r"(?P<cue>[A-Za-z]\s?|版本号?[是为:：]?\s?|(?:升级|更新|降级)[到至为]\s?)"
                              r"(?P<v>\d{1,3}(?:\.\d{1,3}){2})(?![\d.])"
                              r"|(?<![\d.])(?P<v2>\d{1,3}(?:\.\d{1,3}){2})(?=\s?版)")
_TRIPLE_RE = re.compile(r"(?<![\d./:A-Za-z-])(\d{1,4})([/.])(\d{1,2})\2(\d{1,4})(?![\d./:])")
_TWO_DIGIT_YEAR_RE = re.compile(r"(?<![\d.:/])(\d{2})年(?=\d{1,2}月)")     # 98年3月: a year, not 98 years
# a minus sign before a number: 负, so that -2000 reads like 2000 (wetext's own minus path says 负二千); not a range
# (1-2), a word hyphen (COVID-19) or a formula with spaces (3 - 2)
_MINUS_RE = re.compile(r"(?<![0-9A-Za-z_.)）\]/:%\-−－])(?<![0-9A-Za-z]\s)[-−－](?=\d)")

# Latin words that may stand in a Chinese sentence without making it English (units, codes, am/pm, eras)
ZH_CONTEXT_WORDS = ({u for u in UNITS if u.isascii() and u.isalpha()}
                    | {"am", "pm", "AM", "PM", "a", "m", "p", "ad", "bc", "AD", "BC", "d", "c", "CNY", "RMB", "HKD", "USD",
                       "EUR", "GBP", "JPY", "AUD", "to", "b"})


def latin_is_zh_context(text: str) -> bool:
    """True when every Latin word of ``text`` is a unit, a currency code, am/pm or an era, a letter+digit code or a
    capital acronym (25kg, CNY 1.25, 10:04am, CA1234, 5G): such a piece of a Chinese request is read in Chinese."""
    words = re.findall(r"[A-Za-z]+", text)
    return all(w in ZH_CONTEXT_WORDS or (w.isupper() and len(w) <= 4) for w in words)


# acronyms written in lower case inside Chinese (read as letters, as written in capitals)
ACRONYMS = {"atm", "ufo", "nba", "gpu", "cpu", "wto", "mvp", "vip", "iq", "eq", "mba", "ceo", "cfo", "cto", "coo", "app",
            "pdf", "usb", "sim", "ppt", "diy", "ktv", "qq", "id", "pin", "apn", "nfc", "gps", "ai", "it", "hr", "ui",
            "ip", "dns", "vpn", "sms", "otp", "faq", "cba", "fbi", "cia", "bbc", "cctv", "mp3", "mp4", "led", "lcd"}
_KEEP_AS_WORD = {"app", "pin", "it", "id"}           # these are read as words in lower case, leave them
_ACRO_RE = re.compile(r"(?<![A-Za-z])(?:[A-Za-z]{2,4}|[a-z](?: [a-z]){1,3})(?![A-Za-z])")


def _acronym(m: re.Match) -> str:
    w = m.group()
    bare = w.replace(" ", "").lower()
    if bare in ACRONYMS and bare not in _KEEP_AS_WORD and not w.isupper():
        return bare.upper()
    if " " in w and bare in ACRONYMS:
        return bare.upper()
    return w


def _version(v: str) -> str:
    """'17.4.1' → 十七点四点一 (each part a number; a part with a leading zero digit by digit)."""
    return "点".join(cardinal(p) if p == "0" or not p.startswith("0") else plain_digits(p) for p in v.split("."))


def _triple(m: re.Match) -> str:
    a, sep, b, c = m.group(1), m.group(2), m.group(3), m.group(4)
    if len(a) == 2 and len(c) <= 2 and 1 <= int(b) <= 12 and 1 <= int(c) <= 31:          # yy/m/d
        return f"{plain_digits(a)}年{cardinal(b)}月{cardinal(c)}日"
    if sep == "/" and len(c) == 4 and len(a) <= 2 and 1 <= int(a) <= 12 and 13 <= int(b) <= 31:   # m/d/yyyy
        return f"{c}年{int(a)}月{int(b)}日"
    if sep == "." and len(a) <= 3 and len(c) <= 3:                                          # a version number
        return _version(m.group())
    return m.group()


def _era(m: re.Match) -> str:
    return ("公元前" if m.group(3) else "公元") + plain_digits(m.group(1)) + "年"


_WIDE_COLON_RE = re.compile(r"(?<=\d)：(?=\d)")


_TO_RE = re.compile(r"(?<![A-Za-z0-9])([A-Z])2([A-Z])(?![A-Za-z0-9])")     # B2B, O2O: "B to B"


def pre_zh_first(text: str, left: str = "") -> str:
    """Rules that must see the raw text (before separators are stripped and wetext runs). ``left``: the text just
    before (the previous segment's end), so that a code keyword there still applies (密码 | 是123456)."""
    text = _WIDE_COLON_RE.sub(":", text)
    if left:
        both = _CODE_RE.sub(lambda m: _code(m) if m.start("code") >= len(left) else m.group(), left + text)
        text = both[len(left):]       # the keyword and separator are kept verbatim, so ``left`` is unchanged
    text = _TO_RE.sub(r"\1 to \2", text)
    text = _EMAIL_RE.sub(lambda m: _spell_address(m.group()), text)
    text = _URL_RE.sub(lambda m: _spell_address(m.group()), text)
    text = _CODE_RE.sub(_code, text)
    text = _LETTER_CODE_RE.sub(lambda m: m.group("l") + code_digits(m.group("d")), text)
    text = _MOBILE_RE.sub(lambda m: code_digits(m.group()), text)
    text = _SERVICE_RE.sub(lambda m: code_digits(m.group().replace("-", "")), text)
    return text


def minus(text: str) -> str:
    """A minus sign before a number → 负 (run after the rules that read a sign themselves: temperatures, money …)."""
    return _MINUS_RE.sub("负", text)


def pre_zh(text: str) -> str:
    """Rules after the common ones (full-width digits, thousands separators, very long digit strings)."""
    text = _BC_DATE_RE.sub(lambda m: "公元前" + m.group(1), text)
    text = _ERA_RE.sub(_era, text)
    text = _ERA_YEAR_RE.sub(lambda m: m.group(1) + plain_digits(m.group(2)), text)
    text = _DOT_DATE_RE.sub(lambda m: f"{m.group(1)}年{int(m.group(2))}月{int(m.group(3))}日", text)
    text = _CUED_VERSION_RE.sub(lambda m: (m.group("cue") + _version(m.group("v")) if m.group("v")
                                           else _version(m.group("v2"))), text)
    text = _TRIPLE_RE.sub(_triple, text)
    text = _TWO_DIGIT_YEAR_RE.sub(lambda m: plain_digits(m.group(1)) + "年", text)
    text = _LEADING_ZERO_RE.sub(lambda m: m.group(1) or m.group(2), text)
    text = _MONEY_RE.sub(_money, text)
    text = _ZERO_CENTS_RE.sub(lambda m: m.group(1) + ("." + m.group(2) if m.group(2) else ""), text)
    text = _DISCOUNT_RE.sub(lambda m: DIGIT[int(m.group(1))] + DIGIT[int(m.group(2))] + "折", text)
    text = _NEG_FRACTION_RE.sub(lambda m: f"负{m.group(2)}分之{m.group(1)}", text)
    text = _FRACTION_RE.sub(lambda m: f"{m.group(2)}分之{m.group(1)}", text)
    text = _NEG_PERCENT_RE.sub(lambda m: f"负百分之{m.group(1)}", text)
    text = _NEG_WORD_PERCENT_RE.sub("负", text)
    text = _HMS_ZERO_RE.sub(lambda m: (f"{int(m.group(1))}点{int(m.group(2))}分{int(m.group(3))}秒"
                                       if m.group(1) in ("0", "00") else m.group()), text)
    text = _UNIT_RE.sub(lambda m: m.group(1) + UNITS[m.group(2)], text)
    text = _PER_RE.sub(lambda m: "每" + UNITS.get(m.group(1), m.group(1)), text)
    text = _BARE_INT_RE.sub(lambda m: cardinal(m.group()), text)
    text = _ACRO_RE.sub(_acronym, text)
    return text
