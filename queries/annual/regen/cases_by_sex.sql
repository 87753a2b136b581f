-- Registered cases by product and sex. / 製品別・男女別登録症例数
SELECT t.product_code, p.sex, COUNT(DISTINCT t.pid) AS n
FROM regen_treatment AS t
JOIN patient AS p ON p.pid = t.pid
WHERE t.fiscal_year = {fy}
GROUP BY t.product_code, p.sex
