-- ALS registry patients by 5-year age band in the fiscal year (fiscal year minus birth
-- year; dates of birth are coarsened to the year at ingest).
-- 年齢階級別 ALS 登録患者数（年齢 = 年度 − 生年。生年月日は取込時に年へ粗化）
SELECT CASE
        WHEN {fy} - p.birth_year < 5 THEN '0-4'
        WHEN {fy} - p.birth_year < 10 THEN '5-9'
        WHEN {fy} - p.birth_year < 15 THEN '10-14'
        WHEN {fy} - p.birth_year < 20 THEN '15-19'
        WHEN {fy} - p.birth_year < 25 THEN '20-24'
        WHEN {fy} - p.birth_year < 30 THEN '25-29'
        WHEN {fy} - p.birth_year < 35 THEN '30-34'
        WHEN {fy} - p.birth_year < 40 THEN '35-39'
        WHEN {fy} - p.birth_year < 45 THEN '40-44'
        WHEN {fy} - p.birth_year < 50 THEN '45-49'
        WHEN {fy} - p.birth_year < 55 THEN '50-54'
        WHEN {fy} - p.birth_year < 60 THEN '55-59'
        WHEN {fy} - p.birth_year < 65 THEN '60-64'
        WHEN {fy} - p.birth_year < 70 THEN '65-69'
        WHEN {fy} - p.birth_year < 75 THEN '70-74'
        WHEN {fy} - p.birth_year < 80 THEN '75-79'
        WHEN {fy} - p.birth_year < 85 THEN '80-84'
        WHEN {fy} - p.birth_year < 90 THEN '85-89'
        ELSE '90+'
    END AS age_band, COUNT(DISTINCT v.pid) AS n
FROM als_visit AS v
JOIN patient AS p ON p.pid = v.pid
WHERE v.fiscal_year = {fy}
GROUP BY 1
