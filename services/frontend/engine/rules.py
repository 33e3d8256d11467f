"""Our context rules for polyphones, applied after the phrase table and the network (the replace dictionary and
inline readings still win over them).

Each rule is a regular expression with one named group ``c`` (the character) and the reading it gets there. They fix
phrase-table errors and the readings a service bot says all day, where the network (trained on encyclopedia text)
is weakest: 为您 wèi, 金额为 wéi, 还款 huán, 重新 chóng, 行长 háng, 您得先 děi, 应于 yīng …
"""
from __future__ import annotations

import re

# Errors of pypinyin's phrase table: these win over it.
_PHRASE_FIXES: list[tuple[str, str]] = [
    (r"温(?P<c>差)", "cha1"), (r"(?P<c>还)(?=款|贷|钱|清|债)", "huan2"), (r"(?<=[归偿退交送返奉])(?P<c>还)", "huan2"),
    (r"(?<=银行)(?P<c>行)(?=长)", "hang2"), (r"(?<=银行行)(?P<c>长)", "zhang3"),
    (r"(?P<c>重)(?=新|置|启|试|发|填|输|拨|签|设|连|登|付|申|提|写|订)", "chong2"),
    (r"(?P<c>为)(?=您|你|大家|客户|用户|每位|每一位|各位|广大|全体)", "wei4"),
]
# Context rules: only where no phrase of >= 2 characters in the table covers the character.
_RULES: list[tuple[str, str]] = [
    (r"(?P<c>差)[价异额值距]", "cha1"), (r"误(?P<c>差)", "cha1"), (r"(?P<c>差)[评点不劲]", "cha4"), (r"出(?P<c>差)", "chai1"),
    # 为: wèi before the one served / the purpose, wéi after what is being stated ("金额为", "升级为")
    (r"(?P<c>为)(?=您|你|他|她|它|我|咱|大家|客户|用户|此|了|何|什么|啥|人民)", "wei4"),
    (r"[因]?(?<=因)(?P<c>为)", "wei4"),
    (r"(?<=[额间格为称码址态果期数量限率值度号名式型级改换成作认称视分以行设定置更变转])(?P<c>为)(?![您你他她我咱了何什啥])",
     "wei2"),
    (r"(?P<c>为)(?=主|止|准|期|难|首|例|零|空|真|假|正|负|佳|宜)", "wei2"),
    # 还: huán when something is given back
    (r"(?P<c>还)(?=款|钱|清|贷|债|本|息|车|书|给|回|原)", "huan2"),
    (r"(?<=[归偿退交送返奉待应未已需要按来])(?P<c>还)(?=[款钱清贷债本息车书给回]|$|[，。！？、])", "huan2"),
    (r"(?<=[归偿退交送返奉])(?P<c>还)", "huan2"),
    (r"(?P<c>还)(?=[是有没要在可能需得会不挺很再想差剩])", "hai2"),
    # 重: chóng = again
    (r"(?P<c>重)(?=新|复|置|启|试|发|办|填|输|拨|来|开|装|建|做|签|选|设|连|登|付|申|提|写|播|传|排|订|定|叠|名|修)", "chong2"),
    # 行 / 长
    (r"(?<=银)(?P<c>行)", "hang2"), (r"(?P<c>行)(?=长|业|情|家|号|规)", "hang2"), (r"(?<=行)(?P<c>长)", "zhang3"),
    (r"(?<=[部队组科处局店厂校院市省县区村班董会家])(?P<c>长)(?![度期久短时效远途])", "zhang3"),
    (r"(?P<c>长)(?=度|期|久|短|时间|达|途|按|假)", "chang2"), (r"(?<=[时延很太较更最超多])(?P<c>长)", "chang2"),
    # 得: děi = must (您得先…, 还得…), de before a complement
    (r"(?<=[您你我他她们就还也都须])(?P<c>得)(?=先|要|去|再|马上|尽快|重新|等|提前|过来|本人|亲自|带)", "dei3"),
    (r"(?P<c>得)(?=到|知|出|分|益|当|体|奖|失)", "de2"), (r"(?<=[获取赢])(?P<c>得)", "de2"),
    (r"(?<=[懂记觉值显使免晓])(?P<c>得)", "de5"),
    # 地: dì as a place, de after an adverb of manner
    (r"(?P<c>地)(?=址|点|区|方|图|铁|面|下|段|域|标|球|带|板|税|产)", "di4"),
    (r"(?<=[心快慢细真耐认切诚热仔尽逐渐])(?P<c>地)(?=[为帮给向处回等查说告提])", "de5"),
    # 了: liǎo in 了解 and in potential complements (办不了, 来得了)
    (r"(?P<c>了)(?=解|结|却|如指掌)", "liao3"), (r"(?<=[不得])(?P<c>了)(?=[。！？，、；]|$|[的吗呢])", "liao3"),
    # 着: zháo (着急, 睡着, 找不着), zhuó (着手, 着装), else zhe
    (r"(?P<c>着)(?=急|凉|火|迷)", "zhao2"), (r"(?<=[睡找不得])(?P<c>着)(?=[。！？，、；]|$|[了的])", "zhao2"),
    (r"(?P<c>着)(?=手|重|装|陆|想|力|落)", "zhuo2"),
    # 都: dū in place names and 都市
    (r"(?<=[首成京古帝国旧])(?P<c>都)(?![是有会要在可能不没已很把给])", "du1"), (r"(?P<c>都)(?=市|城|会区|江堰)", "du1"),
    # 调: diào (调取, 调查, 调换 …), tiáo (调整, 空调 …)
    (r"(?P<c>调)(?=取|查|换|度|动|岗|档|研|用|配|派|拨|包|令|头|离|任)", "diao4"),
    (r"(?P<c>调)(?=整|节|试|解|和|控|价|低|高|大|小|成|至|到|为|回|理|味)", "tiao2"), (r"(?<=[空协微烹])(?P<c>调)", "tiao2"),
    # 应: yīng = should (应于, 应在, 您应 …), yìng = respond
    (r"(?P<c>应)(?=该|当|于|在|按|予|由|先|尽|是|有|付|收|还|缴|交|到|能|可|属|视)", "ying1"),
    (r"(?<=[响回答反对相供适效感报呼照接])(?P<c>应)", "ying4"), (r"(?P<c>应)(?=用|答|急|对|聘|邀|战|变|届)", "ying4"),
    # others a bot says
    (r"(?<=[累])(?P<c>计)", "ji4"), (r"(?P<c>累)(?=计|积)", "lei3"),     (r"(?<=[利汇效概频费比税])(?P<c>率)", "lv4"), (r"(?P<c>系)(?=好|上鞋带|紧)", "ji4"),
    (r"(?<=[有没])(?P<c>空)", "kong4"), (r"(?P<c>空)(?=格|闲|位|档|白|隙)", "kong4"),
    (r"(?<=[请休放年病产婚])(?P<c>假)", "jia4"), (r"(?P<c>假)(?=期|日|条|单)", "jia4"),
    (r"(?<=[打])(?P<c>折)", "zhe2"), (r"(?<=[处])(?P<c>理)", "li3"), (r"(?P<c>处)(?=理|置|罚|分)", "chu3"),
    (r"(?P<c>转)(?=账|帐|发|交|接|人工|给|入|出|到|让|告|换|移|达|存)", "zhuan3"),
    (r"(?P<c>便)(?=宜)", "pian2"), (r"(?P<c>数)(?=据|字|量|额|值|目|码)", "shu4"),
    (r"(?P<c>供)(?=应|货|给|电|水|暖)", "gong1"), (r"(?<=[提])(?P<c>供)", "gong1"),
    (r"(?<=[号单])(?P<c>码)", "ma3"), (r"(?<=[结])(?P<c>果)", "guo3"),
]
PHRASE_FIXES = [(re.compile(rx), p) for rx, p in _PHRASE_FIXES]
RULES = [(re.compile(rx), p) for rx, p in _RULES]


def context_readings(text: str, from_phrase) -> dict[int, str]:
    """{position: reading} the rules give in ``text``. ``from_phrase(pos)``: whether a phrase of the table gave that
    character its reading (then only a phrase fix applies). A later rule wins over an earlier one at one place."""
    out: dict[int, str] = {}
    for rx, p in RULES:
        for m in rx.finditer(text):
            pos = m.start("c")
            if not from_phrase(pos):
                out[pos] = p
    for rx, p in PHRASE_FIXES:
        for m in rx.finditer(text):
            out[m.start("c")] = p
    return out
