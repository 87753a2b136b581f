-- 都道府県別の患者分布（申請都道府県）と人口 10 万人あたりの患者数
-- Patients by prefecture of application, with patients per 100,000 inhabitants.
-- Dataset: nanbyo. `population` is in thousands (reference table `prefecture`).
SELECT
    s.prefecture_code,
    pr.name_ja,
    pr.name_en,
    count(DISTINCT s.pid) AS patients,
    count(DISTINCT s.pid) * 100.0 / pr.population AS patients_per_100k
FROM nanbyo_survey AS s
JOIN prefecture AS pr ON pr.prefecture_code = s.prefecture_code
GROUP BY s.prefecture_code, pr.name_ja, pr.name_en, pr.population
ORDER BY s.prefecture_code
