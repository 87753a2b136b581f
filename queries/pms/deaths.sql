-- PMS: deaths (adverse events with outcome "death") by product and fiscal year.
-- 製造販売後調査: 製品別・年度別の死亡例数
SELECT product_code, fiscal_year, COUNT(DISTINCT pid) AS deaths
FROM adverse_event
WHERE outcome = 'death'
GROUP BY product_code, fiscal_year
ORDER BY product_code, fiscal_year
