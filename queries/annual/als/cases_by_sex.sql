-- ALS registry patients by sex. / 男女別 ALS 登録患者数
SELECT p.sex, COUNT(DISTINCT v.pid) AS n
FROM als_visit AS v
JOIN patient AS p ON p.pid = v.pid
WHERE v.fiscal_year = {fy}
GROUP BY p.sex
