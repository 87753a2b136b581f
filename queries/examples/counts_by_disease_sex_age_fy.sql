-- 指定難病の受給者数：告示番号 × 性別 × 調査時年齢（5 歳階級）× 年度
-- Patients per designated disease × sex × 5-year age band at survey × fiscal year.
-- Dataset: nanbyo. Each patient counts once per cell (one survey per patient and year).
SELECT
    s.disease_no,
    p.sex,
    s.age_band,
    s.fiscal_year,
    count(DISTINCT s.pid) AS patients
FROM nanbyo_survey AS s
JOIN patient AS p ON p.pid = s.pid
GROUP BY s.disease_no, p.sex, s.age_band, s.fiscal_year
ORDER BY s.disease_no, p.sex, s.age_band, s.fiscal_year
