-- Registered cases by sex, all products. / 男女別登録症例数（全製品）
SELECT p.sex, COUNT(DISTINCT t.pid) AS n
FROM regen_treatment AS t
JOIN patient AS p ON p.pid = t.pid
WHERE t.fiscal_year = {fy}
GROUP BY p.sex
