-- PMS: registered cases by product, sex and 5-year age band (seed 001: registration counts by sex and age).
-- 製造販売後調査: 製品別・性別・5歳階級別の登録症例数
SELECT t.product_code, p.sex, t.age_band, COUNT(DISTINCT t.pid) AS cases
FROM regen_treatment t
JOIN patient p ON p.pid = t.pid
GROUP BY t.product_code, p.sex, t.age_band
ORDER BY t.product_code, p.sex, t.age_band
