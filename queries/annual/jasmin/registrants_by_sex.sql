-- Registrants by disease group and sex. / 疾患群別・男女別登録者数
SELECT r.disease_group, p.sex, COUNT(DISTINCT r.pid) AS n
FROM jasmin_registrant AS r
JOIN patient AS p ON p.pid = r.pid
WHERE r.fiscal_year <= {fy}
GROUP BY r.disease_group, p.sex
