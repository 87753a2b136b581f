//! Public reference data: designated intractable diseases, prefectures, regenerative-medicine
//! products and their manufacturers. The synthetic generator draws from these tables and writes
//! them as the public reference tables; they carry no patient data.
//!
//! Disease numbers follow the current designated list (告示番号). Relative weights follow the
//! order of magnitude of certified recipients, except that ALS (2) is oversampled so that the
//! longitudinal ALS tables have enough patients at test sizes. Prefecture populations are the
//! 2020 census in thousands. Product names are real approved products, used only to make the
//! synthetic registry look familiar; every patient and event is invented.

/// A designated intractable disease with the shape of its patient population.
pub struct Disease {
    pub no: i32,
    pub name_ja: &'static str,
    pub name_en: &'static str,
    pub group: &'static str,
    /// Relative frequency among registry patients.
    pub weight: u32,
    /// Mean and standard deviation of age at onset, in years.
    pub onset_mean: f64,
    pub onset_sd: f64,
    /// Probability that a patient is male.
    pub male: f64,
}

macro_rules! d {
    ($no:expr, $ja:expr, $en:expr, $g:expr, $w:expr, $m:expr, $sd:expr, $male:expr) => {
        Disease {
            no: $no,
            name_ja: $ja,
            name_en: $en,
            group: $g,
            weight: $w,
            onset_mean: $m,
            onset_sd: $sd,
            male: $male,
        }
    };
}

pub const ALS: i32 = 2;

pub const DISEASES: &[Disease] = &[
    d!(
        1,
        "球脊髄性筋萎縮症",
        "Spinal and bulbar muscular atrophy",
        "神経・筋疾患",
        2,
        45.0,
        10.0,
        1.0
    ),
    d!(
        2,
        "筋萎縮性側索硬化症",
        "Amyotrophic lateral sclerosis",
        "神経・筋疾患",
        25,
        65.0,
        10.0,
        0.6
    ),
    d!(
        3,
        "脊髄性筋萎縮症",
        "Spinal muscular atrophy",
        "神経・筋疾患",
        1,
        8.0,
        8.0,
        0.5
    ),
    d!(
        5,
        "進行性核上性麻痺",
        "Progressive supranuclear palsy",
        "神経・筋疾患",
        12,
        68.0,
        7.0,
        0.55
    ),
    d!(
        6,
        "パーキンソン病",
        "Parkinson's disease",
        "神経・筋疾患",
        140,
        65.0,
        10.0,
        0.45
    ),
    d!(
        8,
        "ハンチントン病",
        "Huntington's disease",
        "神経・筋疾患",
        1,
        42.0,
        12.0,
        0.5
    ),
    d!(
        11,
        "重症筋無力症",
        "Myasthenia gravis",
        "神経・筋疾患",
        25,
        50.0,
        18.0,
        0.4
    ),
    d!(
        13,
        "多発性硬化症／視神経脊髄炎",
        "Multiple sclerosis / neuromyelitis optica",
        "神経・筋疾患",
        21,
        35.0,
        11.0,
        0.3
    ),
    d!(
        14,
        "慢性炎症性脱髄性多発神経炎／多巣性運動ニューロパチー",
        "Chronic inflammatory demyelinating polyneuropathy / multifocal motor neuropathy",
        "神経・筋疾患",
        5,
        50.0,
        16.0,
        0.65
    ),
    d!(
        17,
        "多系統萎縮症",
        "Multiple system atrophy",
        "神経・筋疾患",
        11,
        60.0,
        8.0,
        0.55
    ),
    d!(
        18,
        "脊髄小脳変性症（多系統萎縮症を除く。）",
        "Spinocerebellar degeneration (excluding MSA)",
        "神経・筋疾患",
        27,
        50.0,
        15.0,
        0.5
    ),
    d!(
        49,
        "全身性エリテマトーデス",
        "Systemic lupus erythematosus",
        "免疫疾患",
        65,
        32.0,
        13.0,
        0.1
    ),
    d!(
        50,
        "皮膚筋炎／多発性筋炎",
        "Dermatomyositis / polymyositis",
        "免疫疾患",
        24,
        52.0,
        15.0,
        0.3
    ),
    d!(
        51,
        "全身性強皮症",
        "Systemic sclerosis",
        "免疫疾患",
        27,
        50.0,
        13.0,
        0.12
    ),
    d!(
        53,
        "シェーグレン症候群",
        "Sjögren's syndrome",
        "免疫疾患",
        10,
        52.0,
        13.0,
        0.08
    ),
    d!(
        56,
        "ベーチェット病",
        "Behçet's disease",
        "免疫疾患",
        13,
        35.0,
        10.0,
        0.5
    ),
    d!(
        57,
        "特発性拡張型心筋症",
        "Idiopathic dilated cardiomyopathy",
        "循環器疾患",
        20,
        50.0,
        15.0,
        0.7
    ),
    d!(
        63,
        "特発性血小板減少性紫斑病",
        "Immune thrombocytopenia",
        "血液疾患",
        17,
        45.0,
        20.0,
        0.35
    ),
    d!(
        66,
        "IgA 腎症",
        "IgA nephropathy",
        "腎・泌尿器疾患",
        11,
        35.0,
        14.0,
        0.5
    ),
    d!(
        67,
        "多発性嚢胞腎",
        "Autosomal dominant polycystic kidney disease",
        "腎・泌尿器疾患",
        11,
        45.0,
        12.0,
        0.5
    ),
    d!(
        71,
        "特発性大腿骨頭壊死症",
        "Idiopathic osteonecrosis of the femoral head",
        "骨・関節疾患",
        17,
        45.0,
        13.0,
        0.6
    ),
    d!(
        84,
        "サルコイドーシス",
        "Sarcoidosis",
        "呼吸器疾患",
        15,
        45.0,
        17.0,
        0.35
    ),
    d!(
        85,
        "特発性間質性肺炎",
        "Idiopathic interstitial pneumonia",
        "呼吸器疾患",
        20,
        68.0,
        9.0,
        0.7
    ),
    d!(
        86,
        "肺動脈性肺高血圧症",
        "Pulmonary arterial hypertension",
        "循環器疾患",
        4,
        40.0,
        17.0,
        0.3
    ),
    d!(
        90,
        "網膜色素変性症",
        "Retinitis pigmentosa",
        "視覚疾患",
        25,
        40.0,
        18.0,
        0.5
    ),
    d!(
        93,
        "原発性胆汁性胆管炎",
        "Primary biliary cholangitis",
        "消化器疾患",
        20,
        55.0,
        11.0,
        0.15
    ),
    d!(
        95,
        "自己免疫性肝炎",
        "Autoimmune hepatitis",
        "消化器疾患",
        6,
        55.0,
        14.0,
        0.15
    ),
    d!(
        96,
        "クローン病",
        "Crohn's disease",
        "消化器疾患",
        50,
        24.0,
        8.0,
        0.7
    ),
    d!(
        97,
        "潰瘍性大腸炎",
        "Ulcerative colitis",
        "消化器疾患",
        140,
        35.0,
        14.0,
        0.55
    ),
];

/// A prefecture with its JIS X 0401 code.
pub struct Prefecture {
    pub code: &'static str,
    pub name_ja: &'static str,
    pub name_en: &'static str,
    pub region: &'static str,
    /// Population in thousands (2020 census); also the sampling weight.
    pub population: i64,
}

macro_rules! p {
    ($c:expr, $ja:expr, $en:expr, $r:expr, $pop:expr) => {
        Prefecture {
            code: $c,
            name_ja: $ja,
            name_en: $en,
            region: $r,
            population: $pop,
        }
    };
}

pub const PREFECTURES: &[Prefecture] = &[
    p!("01", "北海道", "Hokkaido", "北海道", 5225),
    p!("02", "青森県", "Aomori", "東北", 1238),
    p!("03", "岩手県", "Iwate", "東北", 1211),
    p!("04", "宮城県", "Miyagi", "東北", 2302),
    p!("05", "秋田県", "Akita", "東北", 960),
    p!("06", "山形県", "Yamagata", "東北", 1068),
    p!("07", "福島県", "Fukushima", "東北", 1833),
    p!("08", "茨城県", "Ibaraki", "関東", 2867),
    p!("09", "栃木県", "Tochigi", "関東", 1933),
    p!("10", "群馬県", "Gunma", "関東", 1939),
    p!("11", "埼玉県", "Saitama", "関東", 7345),
    p!("12", "千葉県", "Chiba", "関東", 6284),
    p!("13", "東京都", "Tokyo", "関東", 14048),
    p!("14", "神奈川県", "Kanagawa", "関東", 9237),
    p!("15", "新潟県", "Niigata", "中部", 2201),
    p!("16", "富山県", "Toyama", "中部", 1035),
    p!("17", "石川県", "Ishikawa", "中部", 1133),
    p!("18", "福井県", "Fukui", "中部", 767),
    p!("19", "山梨県", "Yamanashi", "中部", 810),
    p!("20", "長野県", "Nagano", "中部", 2048),
    p!("21", "岐阜県", "Gifu", "中部", 1979),
    p!("22", "静岡県", "Shizuoka", "中部", 3633),
    p!("23", "愛知県", "Aichi", "中部", 7542),
    p!("24", "三重県", "Mie", "近畿", 1770),
    p!("25", "滋賀県", "Shiga", "近畿", 1414),
    p!("26", "京都府", "Kyoto", "近畿", 2578),
    p!("27", "大阪府", "Osaka", "近畿", 8838),
    p!("28", "兵庫県", "Hyogo", "近畿", 5465),
    p!("29", "奈良県", "Nara", "近畿", 1324),
    p!("30", "和歌山県", "Wakayama", "近畿", 923),
    p!("31", "鳥取県", "Tottori", "中国", 553),
    p!("32", "島根県", "Shimane", "中国", 671),
    p!("33", "岡山県", "Okayama", "中国", 1888),
    p!("34", "広島県", "Hiroshima", "中国", 2800),
    p!("35", "山口県", "Yamaguchi", "中国", 1342),
    p!("36", "徳島県", "Tokushima", "四国", 720),
    p!("37", "香川県", "Kagawa", "四国", 950),
    p!("38", "愛媛県", "Ehime", "四国", 1335),
    p!("39", "高知県", "Kochi", "四国", 692),
    p!("40", "福岡県", "Fukuoka", "九州・沖縄", 5135),
    p!("41", "佐賀県", "Saga", "九州・沖縄", 811),
    p!("42", "長崎県", "Nagasaki", "九州・沖縄", 1312),
    p!("43", "熊本県", "Kumamoto", "九州・沖縄", 1738),
    p!("44", "大分県", "Oita", "九州・沖縄", 1124),
    p!("45", "宮崎県", "Miyazaki", "九州・沖縄", 1070),
    p!("46", "鹿児島県", "Kagoshima", "九州・沖縄", 1588),
    p!("47", "沖縄県", "Okinawa", "九州・沖縄", 1467),
];

/// The prefecture whose name starts a full Japanese address, if any. Addresses always begin
/// with the prefecture name, which is what ingest coarsens them to.
pub fn prefecture_of_address(address: &str) -> Option<&'static Prefecture> {
    PREFECTURES.iter().find(|p| address.starts_with(p.name_ja))
}

pub struct Manufacturer {
    pub code: &'static str,
    pub name_ja: &'static str,
    pub name_en: &'static str,
}

pub const MANUFACTURERS: &[Manufacturer] = &[
    Manufacturer {
        code: "M01",
        name_ja: "テルモ株式会社",
        name_en: "Terumo Corporation",
    },
    Manufacturer {
        code: "M02",
        name_ja: "JCRファーマ株式会社",
        name_en: "JCR Pharmaceuticals",
    },
    Manufacturer {
        code: "M03",
        name_ja: "株式会社ジャパン・ティッシュエンジニアリング",
        name_en: "Japan Tissue Engineering",
    },
    Manufacturer {
        code: "M04",
        name_ja: "ニプロ株式会社",
        name_en: "Nipro Corporation",
    },
    Manufacturer {
        code: "M05",
        name_ja: "ノバルティスファーマ株式会社",
        name_en: "Novartis Pharma",
    },
];

pub struct Product {
    pub code: &'static str,
    pub manufacturer: &'static str,
    pub name_ja: &'static str,
    pub name_en: &'static str,
    pub product_type: &'static str,
    pub approval_year: i32,
    /// Relative number of treated patients.
    pub weight: u32,
    /// Mean and standard deviation of age at treatment.
    pub age_mean: f64,
    pub age_sd: f64,
    /// Expected adverse events per treated patient.
    pub ae_rate: f64,
    /// Adverse event terms typical for the product, most frequent first (catalogue domain).
    pub ae_terms: &'static [&'static str],
}

const CELL: &str = "ヒト細胞加工製品";
const GENE: &str = "遺伝子治療用製品";

pub const PRODUCTS: &[Product] = &[
    Product {
        code: "P01",
        manufacturer: "M01",
        name_ja: "ハートシート",
        name_en: "HeartSheet",
        product_type: CELL,
        approval_year: 2015,
        weight: 3,
        age_mean: 65.0,
        age_sd: 10.0,
        ae_rate: 0.4,
        ae_terms: &["発熱", "感染症", "拒絶反応", "肝機能障害"],
    },
    Product {
        code: "P02",
        manufacturer: "M02",
        name_ja: "テムセルHS注",
        name_en: "TEMCELL HS Inj.",
        product_type: CELL,
        approval_year: 2015,
        weight: 10,
        age_mean: 45.0,
        age_sd: 18.0,
        ae_rate: 0.8,
        ae_terms: &["感染症", "発熱", "血球減少", "肝機能障害"],
    },
    Product {
        code: "P03",
        manufacturer: "M03",
        name_ja: "ジェイス",
        name_en: "JACE",
        product_type: CELL,
        approval_year: 2007,
        weight: 8,
        age_mean: 40.0,
        age_sd: 22.0,
        ae_rate: 0.3,
        ae_terms: &["感染症", "拒絶反応", "発熱", "注射部位反応"],
    },
    Product {
        code: "P04",
        manufacturer: "M03",
        name_ja: "ジャック",
        name_en: "JACC",
        product_type: CELL,
        approval_year: 2012,
        weight: 12,
        age_mean: 35.0,
        age_sd: 14.0,
        ae_rate: 0.2,
        ae_terms: &["注射部位反応", "感染症", "発熱"],
    },
    Product {
        code: "P05",
        manufacturer: "M04",
        name_ja: "ステミラック注",
        name_en: "STEMIRAC Inj.",
        product_type: CELL,
        approval_year: 2018,
        weight: 4,
        age_mean: 50.0,
        age_sd: 17.0,
        ae_rate: 0.5,
        ae_terms: &["発熱", "肝機能障害", "感染症", "腫瘍形成"],
    },
    Product {
        code: "P06",
        manufacturer: "M05",
        name_ja: "キムリア点滴静注",
        name_en: "Kymriah",
        product_type: GENE,
        approval_year: 2019,
        weight: 10,
        age_mean: 45.0,
        age_sd: 20.0,
        ae_rate: 1.6,
        ae_terms: &[
            "サイトカイン放出症候群",
            "血球減少",
            "感染症",
            "神経毒性",
            "発熱",
        ],
    },
    Product {
        code: "P07",
        manufacturer: "M05",
        name_ja: "ゾルゲンスマ点滴静注",
        name_en: "Zolgensma",
        product_type: GENE,
        approval_year: 2020,
        weight: 2,
        age_mean: 1.0,
        age_sd: 0.6,
        ae_rate: 0.9,
        ae_terms: &["肝機能障害", "発熱", "血球減少"],
    },
    Product {
        code: "P08",
        manufacturer: "M02",
        name_ja: "テムセルHS注（小児）",
        name_en: "TEMCELL HS Inj. (paediatric)",
        product_type: CELL,
        approval_year: 2015,
        weight: 2,
        age_mean: 8.0,
        age_sd: 5.0,
        ae_rate: 0.8,
        ae_terms: &["感染症", "発熱", "移植片対宿主病"],
    },
];
